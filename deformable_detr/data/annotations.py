"""COCO annotation records -> the target dict the transforms expect, as the authors prepare them."""

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from deformable_detr.data.transforms import Target


def coco_to_target(
    annotations: list[dict[str, Any]],
    image_id: int,
    height: int,
    width: int,
    cat_id_to_label: dict[int, int] | None = None,
) -> Target:
    """Build the target of one image.

    Crowd annotations are dropped, boxes converted from (x, y, w, h) to XYXY and clipped to the image, boxes
    with no width or height removed. With `cat_id_to_label`, annotations of other categories are dropped and
    labels are remapped; otherwise labels are the COCO category ids.

    Returns:
        boxes BoundingBoxes [K, 4] XYXY pixels, labels int64 [K], area float32 [K] (the annotation's own
        area), iscrowd int64 [K], image_id int64 [], orig_size and size int64 [2] (h, w).
    """
    kept = [a for a in annotations if not a.get("iscrowd", 0)]
    if cat_id_to_label is not None:
        kept = [a for a in kept if a["category_id"] in cat_id_to_label]
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([a["bbox"] for a in kept], dtype=torch.float32).reshape(-1, 4),
        format=tv_tensors.BoundingBoxFormat.XYWH,
        canvas_size=(height, width),
    )
    boxes = F.clamp_bounding_boxes(F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    category_ids = [a["category_id"] for a in kept]
    labels = [cat_id_to_label[c] for c in category_ids] if cat_id_to_label is not None else category_ids
    return {
        "boxes": tv_tensors.wrap(boxes[keep], like=boxes),
        "labels": torch.tensor(labels, dtype=torch.int64)[keep],
        "area": torch.tensor([float(a["area"]) for a in kept], dtype=torch.float32)[keep],
        "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in kept], dtype=torch.int64)[keep],
        "image_id": torch.tensor(image_id, dtype=torch.int64),
        "orig_size": torch.tensor([height, width], dtype=torch.int64),
        "size": torch.tensor([height, width], dtype=torch.int64),
    }
