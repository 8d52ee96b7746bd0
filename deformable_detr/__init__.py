"""Deformable DETR building blocks; `model.py`, `data.py` and `model_def.py` are the entry points."""
