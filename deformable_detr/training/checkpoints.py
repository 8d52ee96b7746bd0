"""What a checkpoint needs besides its weights to be used on its own: the hyperparameters that build the
model, the data settings, and the label -> COCO category mapping with names."""

import json
import os
from collections.abc import Mapping
from typing import Any

from determined import pytorch

METADATA_FILE = "deformable_detr.json"


def make_metadata(
    hparams: Mapping, dataset_config: Mapping, label_to_cat_id: list[int] | None, category_names: Mapping[int, str]
) -> dict[str, Any]:
    return {
        "hparams": dict(hparams),
        "data": dict(dataset_config),
        "label_to_cat_id": label_to_cat_id,
        "category_names": {str(cat_id): name for cat_id, name in category_names.items()},
    }


def read_metadata(checkpoint_dir: str) -> dict[str, Any]:
    path = os.path.join(checkpoint_dir, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{checkpoint_dir!r} has no {METADATA_FILE}: not a checkpoint of this package")
    with open(path) as f:
        return json.load(f)


class CheckpointMetadataWriter(pytorch.PyTorchCallback):
    """Writes `deformable_detr.json` into every checkpoint Determined saves."""

    def __init__(self, metadata: Mapping[str, Any]):
        self.metadata = dict(metadata)

    def on_checkpoint_write_end(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, METADATA_FILE), "w") as f:
            json.dump(self.metadata, f, indent=1)
