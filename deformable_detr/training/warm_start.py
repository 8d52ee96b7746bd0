"""Warm start from a released Deformable DETR checkpoint: {"model": state_dict, "args": argparse.Namespace, ...}."""

import logging
import os
from collections.abc import Callable
from typing import BinaryIO

import torch.hub
from torch import nn

from deformable_detr.inference.loading import StateDictFit, describe_source, read_released_checkpoint

# Keys of the classification heads; they depend on num_classes and are left at their fresh initialisation
# when fine-tuning to another number of classes.
CLASS_HEAD_PREFIXES = ("class_embed.", "transformer.decoder.class_embed.")


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
    source = describe_source(path_or_file)
    try:
        state_dict, _ = read_released_checkpoint(path_or_file)
    except ValueError as error:
        raise ValueError(f"warm start: {error}") from error
    own = model.state_dict()
    fit = StateDictFit.of(own, state_dict)
    problems = fit.problems(allowed_shape_changes=CLASS_HEAD_PREFIXES)
    if problems:
        raise ValueError(f"warm start: {source} does not fit the model (another variant or backbone?): {problems}")
    class_keys = list(fit.wrong_shapes)
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
    info(f"warm start: loaded {len(state_dict)} tensors from {source}")
    return skipped


def resolve_warm_start(source: str) -> str:
    """A local path to the warm-start checkpoint `source`; an http(s) URL is downloaded once to the torch hub
    cache."""
    if source.startswith(("http://", "https://")):
        target = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(source))
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            torch.hub.download_url_to_file(source, target, progress=True)
        return target
    if not os.path.isfile(source):
        raise FileNotFoundError(f"data.trainer.warm_start: no checkpoint file at {source!r}")
    return source
