"""What a checkpoint needs besides its weights to be used on its own (the hyperparameters that build the
model, the data settings, the label -> COCO category mapping with names), written last into each checkpoint
folder with the list of its files, so that its presence marks the checkpoint complete
(`inference.checkpoint_files` checks it); and how many checkpoints a local run keeps."""

import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

from determined import pytorch

from deformable_detr.inference.checkpoint_files import write_checkpoint_metadata

logger = logging.getLogger("deformable_detr")


def make_metadata(
    hparams: Mapping, data_section: Mapping, label_to_cat_id: list[int] | None, category_names: Mapping[int, str]
) -> dict[str, Any]:
    return {
        "hparams": dict(hparams),
        "data": dict(data_section),
        "label_to_cat_id": label_to_cat_id,
        "category_names": {str(cat_id): name for cat_id, name in category_names.items()},
    }


class CheckpointMetadataWriter(pytorch.PyTorchCallback):
    """Writes `deformable_detr.json` (the metadata and the file list) into every checkpoint the chief saves,
    after every other file of it.

    Determined's order for one checkpoint is: `state_dict.pth`, `trial_state.pkl`, `load_data.json`,
    `on_checkpoint_write_end`, `metadata.json`, the upload (cloud storage), `on_checkpoint_upload_end`. Where
    Determined writes the folder in place (`storage_dir`: local runs, shared_fs), the file is written in
    `on_checkpoint_upload_end`, so it is truly last and covers `metadata.json` too. Where the folder is
    uploaded after `on_checkpoint_write_end`, it is written there: the last moment it can join the upload
    (the master records a checkpoint only once its upload has finished).

    Args:
        metadata: see `make_metadata`.
        storage_dir: the folder Determined writes checkpoint folders into in place, or None.
        keep: a local run deletes its own older checkpoints beyond the last `keep` (None keeps all).
        is_chief: only the chief writes.
    """

    def __init__(self, metadata: Mapping[str, Any], storage_dir: str | None, keep: int | None, is_chief: bool):
        self.metadata = dict(metadata)
        self.storage_dir = storage_dir
        self.keep = keep
        self.is_chief = is_chief
        self.written: list[str] = []  # this run's complete checkpoints (folders, or storage ids), oldest first

    @property
    def last_checkpoint(self) -> str | None:
        """The folder (or storage id, for uploaded checkpoints) of the latest checkpoint this run completed."""
        return self.written[-1] if self.written else None

    def on_checkpoint_write_end(self, checkpoint_dir: str) -> None:
        if self.storage_dir is None:
            write_checkpoint_metadata(checkpoint_dir, self.metadata)

    def on_checkpoint_upload_end(self, uuid: str) -> None:
        if not self.is_chief:
            return
        if self.storage_dir is None:
            self.written.append(uuid)
            return
        folder = os.path.join(self.storage_dir, uuid)
        write_checkpoint_metadata(folder, self.metadata)
        self.written.append(folder)
        if self.keep is not None:
            for old in self.written[: -self.keep]:
                # Only this run's own complete checkpoints: others in the folder (the one a run resumed
                # from, another run's) are left alone.
                logger.info("keeping the last %d checkpoints: deleting %s", self.keep, old)
                shutil.rmtree(old)
            self.written = self.written[-self.keep :]
