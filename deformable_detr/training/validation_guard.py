"""A validation that fails does not lose the checkpoint due at the same boundary.

Determined validates before it checkpoints when both fall on the same batch, and an error raised while it
iterates the validation data ends the run there. So the trial's validation loader hands an item that
cannot be read over as a `FailedBatch` instead of raising; the trial then stops training through
Determined's exit path, which writes the checkpoint first, and the run ends with `ValidationFailedError`
naming the item's error and the checkpoint (see `DeformableDETRTrial.evaluate_batch`).
"""

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset


class ValidationFailedError(RuntimeError):
    """Validation stopped on an item it could not read or evaluate; the message names it and the checkpoint
    written before stopping."""


@dataclass(frozen=True)
class ItemError:
    """A validation item that raised: its index, `error` ('ImageDecodeError: cannot decode ...') and the
    traceback text."""

    index: int
    error: str
    traceback: str


@dataclass(frozen=True)
class FailedBatch:
    """A validation batch with at least one item that raised."""

    errors: tuple[ItemError, ...]

    def to(self, device: Any) -> "FailedBatch":
        """Determined moves batches to the device; there is nothing to move."""
        return self


class GuardedDataset(Dataset):
    """`dataset`'s items, or an `ItemError` for an item that raises (in a loader worker or not)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as error:  # handed on whole: the trial checkpoints, then raises it (never skipped)
            return ItemError(index, f"{type(error).__name__}: {error}", traceback.format_exc())


def guarded_collate(collate: Callable[[Sequence[Any]], Any]) -> Callable[[Sequence[Any]], Any]:
    """`collate`, except that a batch holding an `ItemError` becomes a `FailedBatch`."""

    def collate_or_fail(items: Sequence[Any]) -> Any:
        errors = tuple(item for item in items if isinstance(item, ItemError))
        return FailedBatch(errors) if errors else collate(items)

    return collate_or_fail
