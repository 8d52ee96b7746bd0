"""Reproducible, resumable sampling: the order and the augmentation of every sample depend only on
(seed, epoch, index), so a run gives the same batches whatever the worker count and after a resume.

`make_generator` and `seed_worker` seed a plain DataLoader's shuffling and workers instead:
`DataLoader(..., worker_init_fn=seed_worker, generator=make_generator(seed, rank))`.
"""

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


# Spreads derived seeds apart: no two (seed, number) pairs of a run share a derived seed.
SEED_STRIDE = 1_000_003


def mix_seed(seed: int, number: int) -> int:
    """The seed of item `number` (a sample, an epoch, a rank) of a stream seeded with `seed`."""
    return seed * SEED_STRIDE + number


class EpochShuffleBatchSampler(Sampler[list[int]]):
    """Batches of *sample numbers* `epoch * len(dataset) + index`, shuffled per epoch from `seed`.

    Each call to `__iter__` is the next epoch (Determined repeats the sampler for training).

    Args:
        dataset_length: number of samples in the dataset.
        batch_size: samples per batch.
        seed: base seed of the shuffles.
        shuffle: shuffle the indices of each epoch.
        drop_last: drop an incomplete final batch.
        skip_batches: batches to skip at the start, to resume in the middle of a run.
    """

    def __init__(
        self,
        dataset_length: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = True,
        skip_batches: int = 0,
    ):
        if dataset_length <= 0 or batch_size <= 0:
            raise ValueError(f"need a non-empty dataset and a positive batch size, got {dataset_length}, {batch_size}")
        if drop_last and dataset_length < batch_size:
            raise ValueError(f"the dataset has {dataset_length} samples, fewer than one batch of {batch_size}")
        self.dataset_length = dataset_length
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch, self.skip_in_epoch = divmod(skip_batches, len(self))

    def __len__(self) -> int:
        if self.drop_last:
            return self.dataset_length // self.batch_size
        return -(-self.dataset_length // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            order = torch.randperm(self.dataset_length, generator=generator).tolist()
        else:
            order = list(range(self.dataset_length))
        offset = epoch * self.dataset_length
        skip, self.skip_in_epoch = self.skip_in_epoch, 0
        for batch_index in range(skip, len(self)):
            indices = order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
            yield [offset + index for index in indices]


class PerSampleSeededDataset(Dataset):
    """Wraps a dataset so that item `n` (a sample number, see `EpochShuffleBatchSampler`) is
    `dataset[n % len]`, with every random generator seeded from (seed, n) while it is made.

    The global generators are restored afterwards, so the training process's own randomness
    (dropout) is not disturbed when the data is loaded in the main process.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        # Expose the wrapped dataset's attributes (e.g. `coco`, `label_to_cat_id`).
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, sample_number: int):
        sample_seed = mix_seed(self.seed, int(sample_number)) % (2**63)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            np.random.seed(sample_seed % (2**32))
            try:
                return self.dataset[int(sample_number) % len(self.dataset)]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


def make_generator(seed: int, rank: int = 0) -> torch.Generator:
    """A CPU torch.Generator for a DataLoader's `generator=`, seeded from the trial seed and the process rank
    (ranks must not draw the same augmentations for their different images). It fixes the shuffling order and
    the base seed DataLoader gives each worker's torch RNG (which the transforms use)."""
    generator = torch.Generator()
    generator.manual_seed(mix_seed(rank, seed))
    return generator


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn`: seed `random` and NumPy from the worker's torch seed (base seed + worker id)."""
    del worker_id  # already folded into torch.initial_seed() by DataLoader
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
