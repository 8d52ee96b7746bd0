"""The COCO data pipeline: backends (gcs, local, fake), the authors' augmentations, batching and seeding.

`data.py` at the repository root is the entry point; see docs/data.md.
"""
