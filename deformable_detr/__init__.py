"""Deformable DETR for Determined: config/ (settings), models/, data/, training/ (the trial), inference/ and tools/.

The entry points are at the repository root: `model.py`, `data.py`, `model_def.py`, `predict.py`, `train_local.py`.
"""
