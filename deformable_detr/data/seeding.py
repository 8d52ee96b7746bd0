"""Reproducible DataLoader workers for a given seed.

Use both: `DataLoader(..., worker_init_fn=seed_worker, generator=make_generator(seed, rank))`. The generator fixes
the shuffling order and the base seed DataLoader gives each worker's torch RNG (which the transforms use);
`seed_worker` derives Python's and NumPy's seeds from it as well.
"""

import random

import numpy as np
import torch


# Spreads the ranks' seeds apart so that no two (seed, rank) pairs of a run share a generator seed.
RANK_STRIDE = 1_000_003


def make_generator(seed: int, rank: int = 0) -> torch.Generator:
    """A CPU torch.Generator for a DataLoader's `generator=`, seeded from the trial seed and the process rank
    (ranks must not draw the same augmentations for their different images)."""
    generator = torch.Generator()
    generator.manual_seed(seed + RANK_STRIDE * rank)
    return generator


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn`: seed `random` and NumPy from the worker's torch seed (base seed + worker id)."""
    del worker_id  # already folded into torch.initial_seed() by DataLoader
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
