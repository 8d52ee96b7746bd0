"""Warm start from a released Deformable DETR checkpoint: {"model": state_dict, "args": argparse.Namespace, ...}."""

import argparse
import logging
import os
from collections.abc import Callable
from typing import BinaryIO

import torch
from torch import nn

# Keys of the classification heads; they depend on num_classes and are left at their fresh initialisation
# when fine-tuning to another number of classes.
CLASS_HEAD_PREFIXES = ("class_embed.", "transformer.decoder.class_embed.")

# The only non-tensor global the authors' checkpoint files need besides what weights_only allows by default.
SAFE_GLOBALS = [argparse.Namespace]


def read_released_checkpoint(
    path_or_file: str | os.PathLike | BinaryIO,
) -> tuple[dict[str, torch.Tensor], argparse.Namespace | None]:
    """The state_dict under "model" of a checkpoint file and its "args" (None when absent), loaded with
    weights_only=True."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        checkpoint = torch.load(path_or_file, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and "model" in checkpoint:
        state_dict = checkpoint["model"]
    else:
        raise ValueError(
            f"warm start: {_describe(path_or_file)} is not a Deformable DETR checkpoint "
            f"(expected a dict with a 'model' entry, got {type(checkpoint).__name__}"
            + (f" with keys {sorted(checkpoint)[:10]}" if isinstance(checkpoint, dict) else "") + ")"
        )
    if not isinstance(state_dict, dict):
        raise ValueError(
            f"warm start: 'model' in {_describe(path_or_file)} is a {type(state_dict).__name__}, not a state_dict"
        )
    return state_dict, checkpoint.get("args")


def load_pretrained(model: nn.Module, path_or_file: str | os.PathLike | BinaryIO,
                    log: logging.Logger | Callable[[str], None]) -> list[str]:
    """Load a released checkpoint into `model`.

    With the same number of classes every key must match (strict). With a different number of classes
    (fine-tuning), the classification heads keep their fresh initialisation, and `log` says so; any other
    missing, unexpected or differently shaped key raises ValueError.

    Args:
        model: the DeformableDETR built with the checkpoint's architecture settings.
        path_or_file: a path or an open binary file.
        log: a logger (its info method is used) or a function taking a message.

    Returns:
        the checkpoint keys that were not loaded (the classification heads when num_classes differs).
    """
    info = log.info if isinstance(log, logging.Logger) else log
    state_dict, _ = read_released_checkpoint(path_or_file)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"warm start: {_describe(path_or_file)} does not fit the model (another variant or backbone?): "
            f"missing {_preview(missing)}, unexpected {_preview(unexpected)}"
        )
    mismatched = [key for key in own if tuple(own[key].shape) != tuple(state_dict[key].shape)]
    class_keys = [key for key in mismatched if key.startswith(CLASS_HEAD_PREFIXES)]
    other = [key for key in mismatched if not key.startswith(CLASS_HEAD_PREFIXES)]
    if other:
        details = ", ".join(f"{key}: checkpoint {list(state_dict[key].shape)} vs model {list(own[key].shape)}"
                            for key in other[:5])
        raise ValueError(
            f"warm start: {len(other)} tensor(s) of {_describe(path_or_file)} have other shapes: {details}"
        )
    skipped: list[str] = []
    if class_keys:
        skipped = sorted(key for key in state_dict if key.startswith(CLASS_HEAD_PREFIXES))
        checkpoint_classes = state_dict[class_keys[0]].shape[0]
        model_classes = own[class_keys[0]].shape[0]
        state_dict = {key: value for key, value in state_dict.items() if key not in skipped}
        info(
            f"warm start: the checkpoint has {checkpoint_classes} classes and the model {model_classes}; "
            f"the classification heads ({len(skipped)} tensors) keep their fresh initialisation"
        )
        result = model.load_state_dict(state_dict, strict=False)
        if sorted(result.missing_keys) != skipped or result.unexpected_keys:
            raise ValueError(f"warm start: unexpected keys left out: {result}")
    else:
        model.load_state_dict(state_dict, strict=True)
    info(f"warm start: loaded {len(state_dict)} tensors from {_describe(path_or_file)}")
    return skipped


def _describe(path_or_file: object) -> str:
    if isinstance(path_or_file, (str, os.PathLike)):
        return os.fspath(path_or_file)
    return getattr(path_or_file, "name", "the checkpoint file")


def _preview(keys: list[str]) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
