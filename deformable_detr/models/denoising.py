"""Query denoising (DN-DETR, Li et al., CVPR 2022), in training only: groups of extra decoder queries built from
the targets with noise added to their boxes and labels, each trained to give back its own target, with no
matching. They give the decoder well-posed box and class targets from the first step, which the Hungarian
matching alone gives late and unsteadily."""

from typing import NamedTuple

import torch

from deformable_detr.config.model import ModelSettings
from deformable_detr.models.matcher import Indices


class DenoisingQueries(NamedTuple):
    """`groups` copies of every image's targets, noised, padded to `per_group` = the batch's largest target count.

    labels: int64 [B, groups * per_group], the noised labels; padding slots hold `num_classes` (a label of its
        own). boxes: [B, groups * per_group, 4], the noised (cx, cy, w, h) in [0, 1]; padding slots are zeros.
    Query g * per_group + j of an image is its target j (for j below its target count).
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    groups: int
    per_group: int


def noised_queries(targets: list[dict], groups: int, num_classes: int, box_noise: float, label_noise: float,
                   generator: torch.Generator | None = None) -> DenoisingQueries | None:
    """The denoising queries of a batch, or None when no image has a target.

    Args:
        targets: B dicts with labels int64 [K_i] and boxes [K_i, 4] (cxcywh in [0, 1]).
        groups: noised copies of each target.
        num_classes: labels are in [0, num_classes); a noised label is drawn uniformly from them.
        box_noise: lambda of DN-DETR: each centre moves by up to lambda * (w, h) / 2 and each side is scaled by a
            factor in [1 - lambda, 1 + lambda] (uniformly), then the box is clamped to [0, 1].
        label_noise: the probability that a label is replaced by a random one.
        generator: the random source (the trial seeds one per step and worker, so a run is reproducible).
    """
    per_group = max(len(target["labels"]) for target in targets)
    if per_group == 0 or groups == 0:
        return None
    device = targets[0]["boxes"].device
    batch = len(targets)
    labels = torch.full((batch, groups, per_group), num_classes, dtype=torch.int64, device=device)
    boxes = torch.zeros((batch, groups, per_group, 4), dtype=targets[0]["boxes"].dtype, device=device)
    for index, target in enumerate(targets):
        count = len(target["labels"])
        if count == 0:
            continue
        labels[index, :, :count] = target["labels"]
        boxes[index, :, :count] = target["boxes"]
    # the draws cover the padding too, so their number depends only on the batch's shape
    uniform = torch.rand((batch, groups, per_group, 4), generator=generator, dtype=boxes.dtype).to(device) * 2 - 1
    flip = torch.rand((batch, groups, per_group), generator=generator).to(device) < label_noise
    random_labels = torch.randint(0, num_classes, (batch, groups, per_group), generator=generator).to(device)
    valid = labels < num_classes
    labels = torch.where(flip & valid, random_labels, labels)
    centre, size = boxes[..., :2], boxes[..., 2:]
    centre = centre + uniform[..., :2] * box_noise * size / 2
    size = size * (1 + uniform[..., 2:] * box_noise)
    noised = torch.cat([centre, size], -1).clamp(0.0, 1.0) * valid[..., None]
    return DenoisingQueries(labels.flatten(1), noised.flatten(1, 2), groups, per_group)


def training_queries(targets: list[dict], settings: ModelSettings,
                     generator: torch.Generator | None = None) -> DenoisingQueries | None:
    """A training step's denoising queries as `settings` asks for them (None when `denoising_groups` is 0)."""
    if not settings.denoising_groups:
        return None
    return noised_queries(targets, settings.denoising_groups, settings.num_classes, settings.denoising_box_noise,
                          settings.denoising_label_noise, generator)


def denoising_indices(targets: list[dict], groups: int, per_group: int) -> Indices:
    """For each image, (query indices, target indices) of its denoising queries: query g * per_group + j is
    target j, for every group g and every j below the image's target count."""
    indices = []
    for target in targets:
        count = len(target["labels"])
        target_index = torch.arange(count, dtype=torch.int64).repeat(groups)
        query_index = (torch.arange(groups, dtype=torch.int64)[:, None] * per_group
                       + torch.arange(count, dtype=torch.int64)).flatten()
        indices.append((query_index, target_index))
    return indices
