"""What a checkpoint needs besides its weights to be used on its own: the hyperparameters that build the
model, the data settings, and the label -> COCO category mapping with names. `inference.loading` reads it."""

import json
import os
from collections.abc import Mapping
from typing import Any

from determined import pytorch

from deformable_detr.inference.loading import METADATA_FILE


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
    """Writes the metadata file into every checkpoint Determined saves."""

    def __init__(self, metadata: Mapping[str, Any]):
        self.metadata = dict(metadata)

    def on_checkpoint_write_end(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, METADATA_FILE), "w") as f:
            json.dump(self.metadata, f, indent=1)
