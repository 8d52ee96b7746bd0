"""Loading a trained model for inference: a checkpoint of this package or the authors' released weights."""

import argparse
import logging
import os
from typing import Any

import torch
from torchvision import tv_tensors

from deformable_detr.config.model import ModelConfig
from deformable_detr.data.categories import COCO_CATEGORY_NAMES
from deformable_detr.data.transforms import make_transforms
from deformable_detr.models.build import build_model
from deformable_detr.training.checkpoints import read_metadata
from deformable_detr.training.determined_compat import allow_determined_rng_state
from deformable_detr.training.warm_start import read_released_checkpoint

logger = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the model its settings describe."""


def _load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [
        f"{key}: checkpoint {tuple(weights[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(weights) & set(expected))
        if weights[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} shape mismatch(es), e.g. {wrong_shape[:3]}")
        raise CheckpointMismatchError(f"{source} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(weights, strict=True)


def load_for_inference(checkpoint: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any, dict]:
    """The model in eval mode, its post-processors, and a description of its labels.

    Args:
        checkpoint: a checkpoint folder written by this package's trial, or a `.pth` file of the
            authors' released weights (a dict with "model" and "args").

    Returns:
        (model, postprocessors, info) with info = {"names": {label: name}, "label_to_cat_id": list|None,
        "image_scale": float}.
    """
    if os.path.isdir(checkpoint):
        metadata = read_metadata(checkpoint)
        hparams = dict(metadata["hparams"])
        allow_determined_rng_state()
        state = torch.load(os.path.join(checkpoint, "state_dict.pth"), map_location="cpu", weights_only=True)
        weights = {key.removeprefix("module."): value for key, value in state["models_state_dict"][0].items()}
        label_to_cat_id = metadata["label_to_cat_id"]
        cat_names = {int(cat_id): name for cat_id, name in metadata["category_names"].items()}
        image_scale = float(metadata["data"].get("image_scale", 1.0))
    elif os.path.isfile(checkpoint):
        weights, args = read_released_checkpoint(checkpoint)
        if not isinstance(args, argparse.Namespace):
            raise CheckpointMismatchError(f"{checkpoint} has no 'args': its model settings are unknown")
        fields = set(ModelConfig.__dataclass_fields__)
        hparams = {key: value for key, value in vars(args).items() if key in fields}
        label_to_cat_id, cat_names, image_scale = None, COCO_CATEGORY_NAMES, 1.0
    else:
        raise FileNotFoundError(f"no checkpoint at {checkpoint!r}")
    hparams["pretrained_backbone"] = False  # the weights come from the checkpoint
    model, _, postprocessors = build_model(hparams)
    _load_weights(model, weights, checkpoint)
    model.to(device).eval()
    if label_to_cat_id is None:
        names = dict(cat_names)
    else:
        names = {label: cat_names.get(cat_id, str(cat_id)) for label, cat_id in enumerate(label_to_cat_id)}
    return model, postprocessors, {"names": names, "label_to_cat_id": label_to_cat_id, "image_scale": image_scale}


def prepare_image(image: torch.Tensor, image_scale: float) -> torch.Tensor:
    """A uint8 [3, H, W] image resized and normalised as the validation pipeline does -> float [3, H', W']."""
    height, width = image.shape[-2:]
    empty_target = {
        "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)),
        "labels": torch.zeros(0, dtype=torch.int64),
        "area": torch.zeros(0),
        "iscrowd": torch.zeros(0, dtype=torch.int64),
    }
    prepared, _ = make_transforms("val", image_scale)(image, empty_target)
    return prepared
