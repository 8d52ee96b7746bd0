"""Loading a trained model: a checkpoint folder of this package or the authors' released weights, and the one
check that a checkpoint's weights fit a model (inference and warm start)."""

import argparse
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors

from deformable_detr.config.model import ModelSettings
from deformable_detr.config.parsing import field_names
from deformable_detr.data.batching import pad_images
from deformable_detr.data.categories import COCO_CATEGORY_NAMES
from deformable_detr.data.transforms import make_transforms
from deformable_detr.inference.checkpoint_files import (
    IncompleteCheckpointError,
    is_checkpoint_folder,
    latest_complete_checkpoint,
    verify_checkpoint,
)
from deformable_detr.models.build import build_model
from deformable_detr.models.detector import DeformableDETR

WEIGHTS_FILE = "state_dict.pth"
# Non-tensor globals the checkpoint files need besides what torch.load(weights_only=True) allows: the
# authors' files hold their argparse.Namespace, Determined's keep numpy's RNG state.
RELEASED_CHECKPOINT_GLOBALS = [argparse.Namespace]
DETERMINED_CHECKPOINT_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the model its settings describe."""


@dataclass(frozen=True)
class StateDictFit:
    """How a checkpoint's weights fit a model's state_dict: keys only the model has, keys only the checkpoint
    has, and keys whose shapes differ ("key: checkpoint [..] vs model [..]" by key)."""

    missing: list[str]
    unexpected: list[str]
    wrong_shapes: dict[str, str]

    @classmethod
    def of(cls, expected: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> "StateDictFit":
        return cls(
            missing=sorted(set(expected) - set(weights)),
            unexpected=sorted(set(weights) - set(expected)),
            wrong_shapes={
                key: f"{key}: checkpoint {list(weights[key].shape)} vs model {list(expected[key].shape)}"
                for key in expected
                if key in weights and tuple(weights[key].shape) != tuple(expected[key].shape)
            },
        )

    def problems(self, allowed_shape_changes: tuple[str, ...] = ()) -> str | None:
        """What does not fit, in words, or None when everything does; shape changes of keys starting with
        one of `allowed_shape_changes` are not problems."""
        shapes = [text for key, text in self.wrong_shapes.items() if not key.startswith(allowed_shape_changes)]
        found = []
        if self.missing:
            found.append(f"missing {_preview(self.missing)}")
        if self.unexpected:
            found.append(f"unexpected {_preview(self.unexpected)}")
        if shapes:
            found.append(f"shape mismatch {_preview(shapes)}")
        return "; ".join(found) or None


def _preview(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")


def describe_source(path_or_file: object) -> str:
    """A checkpoint's name for messages: its path, or an open file's name."""
    if isinstance(path_or_file, (str, os.PathLike)):
        return os.fspath(path_or_file)
    return getattr(path_or_file, "name", "the checkpoint file")


def read_released_checkpoint(
    path_or_file: str | os.PathLike | BinaryIO,
) -> tuple[dict[str, torch.Tensor], argparse.Namespace | None]:
    """The state_dict under "model" of a released checkpoint file and its "args" (None when absent), loaded
    with weights_only=True."""
    with torch.serialization.safe_globals(RELEASED_CHECKPOINT_GLOBALS):
        checkpoint = torch.load(path_or_file, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(
            f"{describe_source(path_or_file)} is not a Deformable DETR checkpoint "
            f"(expected a dict with a 'model' entry, got {type(checkpoint).__name__}"
            + (f" with keys {sorted(checkpoint)[:10]}" if isinstance(checkpoint, dict) else "") + ")"
        )
    state_dict = checkpoint["model"]
    if not isinstance(state_dict, dict):
        raise ValueError(
            f"'model' in {describe_source(path_or_file)} is a {type(state_dict).__name__}, not a state_dict"
        )
    return state_dict, checkpoint.get("args")


def read_metadata(checkpoint_dir: str) -> dict[str, Any]:
    """The metadata a complete checkpoint folder of this package holds: hparams, data, label_to_cat_id,
    category_names, files. IncompleteCheckpointError names the folder and the file when it is incomplete."""
    return verify_checkpoint(checkpoint_dir)


def read_trial_weights(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    """The model's state_dict in a checkpoint folder the trial wrote (Determined's state_dict.pth), loaded
    with weights_only=True."""
    path = os.path.join(checkpoint_dir, WEIGHTS_FILE)
    # torch.save writes a zip archive; anything else would reach torch's legacy unpickler, whose errors on
    # arbitrary bytes are of any type.
    if os.path.exists(path) and not zipfile.is_zipfile(path):
        raise IncompleteCheckpointError(
            f"checkpoint {checkpoint_dir!r}: cannot read {WEIGHTS_FILE}: not a zip archive as torch.save writes"
        )
    try:
        with torch.serialization.safe_globals(DETERMINED_CHECKPOINT_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise IncompleteCheckpointError(f"checkpoint {checkpoint_dir!r}: {WEIGHTS_FILE} is missing") from error
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:  # a file cut short or damaged
        raise IncompleteCheckpointError(
            f"checkpoint {checkpoint_dir!r}: cannot read {WEIGHTS_FILE}: {error}"
        ) from error
    return {key.removeprefix("module."): value for key, value in state["models_state_dict"][0].items()}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference.

    model: in eval mode on its device. postprocessors: {"bbox": PostProcess}. names: {label: class name}.
    label_to_cat_id: COCO category id of each label, or None when labels are category ids.
    image_scale: the scale the model was trained at (its images are resized as in validation at that scale).
    """

    model: DeformableDETR
    postprocessors: dict[str, nn.Module]
    names: dict[int, str]
    label_to_cat_id: list[int] | None
    image_scale: float

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """A uint8 [3, H, W] image resized and normalised as the validation pipeline does -> float [3, H', W']."""
        height, width = image.shape[-2:]
        empty_target = {
            "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)),
            "labels": torch.zeros(0, dtype=torch.int64),
            "area": torch.zeros(0),
            "iscrowd": torch.zeros(0, dtype=torch.int64),
        }
        prepared, _ = make_transforms("val", self.image_scale)(image, empty_target)
        return prepared

    @torch.inference_mode()
    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections of uint8 [3, H_i, W_i] images, one batch: per image scores [N], labels [N] and boxes
        [N, 4] (x1, y1, x2, y2 in the image's own pixels), by decreasing score."""
        device = next(self.model.parameters()).device
        batch, mask = pad_images([self.prepare(image) for image in images])
        outputs = self.model(batch.to(device), mask.to(device))
        orig_sizes = torch.tensor([image.shape[-2:] for image in images], device=device)
        return self.postprocessors["bbox"](outputs, orig_sizes)


def load_for_inference(checkpoint: str, device: str | torch.device = "cpu") -> LoadedModel:
    """The model of a checkpoint folder written by this package's trial (or the latest complete one in a folder
    of them), or of a `.pth` file of the authors' released weights (a dict with "model" and "args");
    CheckpointMismatchError when the weights do not fit."""
    if os.path.isdir(checkpoint) and not is_checkpoint_folder(checkpoint):
        checkpoint = latest_complete_checkpoint(checkpoint)  # a run's folder of checkpoints
    if os.path.isdir(checkpoint):
        metadata = read_metadata(checkpoint)
        hparams = dict(metadata["hparams"])
        weights = read_trial_weights(checkpoint)
        label_to_cat_id = metadata["label_to_cat_id"]
        cat_names = {int(cat_id): name for cat_id, name in metadata["category_names"].items()}
        image_scale = float(metadata["data"].get("image_scale", 1.0))
    elif os.path.isfile(checkpoint):
        weights, args = read_released_checkpoint(checkpoint)
        if not isinstance(args, argparse.Namespace):
            raise CheckpointMismatchError(f"{checkpoint} has no 'args': its model settings are unknown")
        model_keys = field_names(ModelSettings)
        hparams = {key: value for key, value in vars(args).items() if key in model_keys}
        label_to_cat_id, cat_names, image_scale = None, COCO_CATEGORY_NAMES, 1.0
    else:
        raise FileNotFoundError(f"no checkpoint at {checkpoint!r}")
    hparams["pretrained_backbone"] = False  # the weights come from the checkpoint
    model, _, postprocessors = build_model(hparams)
    problems = StateDictFit.of(model.state_dict(), weights).problems()
    if problems:
        raise CheckpointMismatchError(f"{checkpoint} does not fit the model: {problems}")
    model.load_state_dict(weights, strict=True)
    model.to(device).eval()
    if label_to_cat_id is None:
        names = dict(cat_names)
    else:
        names = {label: cat_names.get(cat_id, str(cat_id)) for label, cat_id in enumerate(label_to_cat_id)}
    return LoadedModel(model, postprocessors, names, label_to_cat_id, image_scale)
