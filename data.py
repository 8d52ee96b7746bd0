"""Data entry point: `build_dataset` and `collate_fn` for the trial, and seeding for a plain DataLoader.

The settings come from the experiment config's `data:` section (`context.get_data_config()`); see
docs/data.md for the keys, the layout of each backend and the item format.
"""

from deformable_detr.data.batching import collate_fn
from deformable_detr.data.build import build_dataset
from deformable_detr.data.sampling import make_generator, seed_worker

__all__ = ["build_dataset", "collate_fn", "make_generator", "seed_worker"]
