"""Pictures of a run: training and validation curves, and detections drawn beside the ground truth."""

import math
from collections.abc import Mapping, Sequence

import torch
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes, make_grid

from deformable_detr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#808000")


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """An ImageNet-normalised float [3, H, W] image back to uint8 [3, H, W]."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return ((image * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def draw_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int],
    names: Mapping[int, str],
    scores: Sequence[float] | None = None,
) -> torch.Tensor:
    """Draw absolute (x1, y1, x2, y2) boxes [K, 4] on a uint8 [3, H, W] image, labelled with class names
    (and scores when given); colour by class."""
    captions = [names.get(int(label), str(int(label))) for label in labels]
    if scores is not None:
        captions = [f"{caption} {float(score):.2f}" for caption, score in zip(captions, scores, strict=True)]
    colors = [PALETTE[int(label) % len(PALETTE)] for label in labels]
    if len(captions) == 0:
        return image.clone()
    return draw_bounding_boxes(image, boxes.float().cpu(), labels=captions, colors=colors, width=2)


def save_side_by_side(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], path: str, columns: int = 2) -> None:
    """Save (ground truth, prediction) uint8 image pairs as one PNG: each pair side by side, in a grid."""
    if not pairs:
        raise ValueError("save_side_by_side: no images")
    height = max(max(a.shape[1], b.shape[1]) for a, b in pairs)
    width = max(max(a.shape[2], b.shape[2]) for a, b in pairs)

    def padded(image: torch.Tensor) -> torch.Tensor:
        canvas = torch.full((3, height, width), 255, dtype=torch.uint8)
        canvas[:, : image.shape[1], : image.shape[2]] = image
        return canvas

    tiles = [torch.cat([padded(truth), padded(prediction)], dim=2) for truth, prediction in pairs]
    grid = make_grid(tiles, nrow=max(1, min(columns, len(tiles))), padding=6, pad_value=255)
    write_png(grid, path)


def plot_curves(records: Sequence[Mapping], path: str) -> None:
    """Training losses and validation mAP / loss against the batch number, as a PNG.

    Args:
        records: dicts with `kind` ("train" or "validation"), `batch`, and metric values.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    validation = [r for r in records if r["kind"] == "validation"]
    if not train and not validation:
        raise ValueError("plot_curves: no records")
    figure, (loss_axis, map_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, style in (("loss", "-"), ("loss_ce", "--"), ("loss_bbox", "--"), ("loss_giou", "--")):
        points = [(r["batch"], r[name]) for r in train if name in r and math.isfinite(r[name])]
        if points:
            loss_axis.plot(*zip(*points), style, label=f"train {name}")
    points = [(r["batch"], r["loss"]) for r in validation if "loss" in r]
    if points:
        loss_axis.plot(*zip(*points), "o-", color="black", label="validation loss")
    loss_axis.set_xlabel("training batch")
    loss_axis.set_ylabel("loss")
    loss_axis.set_yscale("log")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend()
    for name in ("mAP", "mAP_50", "mAP_75"):
        points = [(r["batch"], r[name]) for r in validation if name in r]
        if points:
            map_axis.plot(*zip(*points), "o-", label=f"validation {name}")
    map_axis.set_xlabel("training batch")
    map_axis.set_ylabel("COCO bbox AP")
    map_axis.set_ylim(0, 1)
    map_axis.grid(alpha=0.3)
    map_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
