"""Detections as COCO results: the rows `COCO.loadRes` takes, for evaluation, prediction files and pictures."""

import numpy as np
import torch

from deformable_detr.data.categories import category_ids

# Columns of a results row.
ROW_FIELDS = ("image_id", "x", "y", "w", "h", "score", "category_id")


def detections_to_rows(
    image_ids: list[int], detections: list[dict[str, torch.Tensor]], label_to_cat_id: list[int] | None
) -> np.ndarray:
    """Detections as rows [image_id, x, y, w, h, score, category_id] (COCO's box is x, y, width, height).

    Args:
        image_ids: B COCO image ids.
        detections: B dicts with `scores` [K], `labels` [K] and `boxes` [K, 4] (absolute x1, y1, x2, y2).
        label_to_cat_id: maps a model label to a COCO category id; None when labels are category ids.

    Returns:
        float64 [sum K, 7]
    """
    rows = []
    for image_id, found in zip(image_ids, detections, strict=True):
        boxes = found["boxes"].detach().float().cpu().double()
        block = np.empty((len(boxes), len(ROW_FIELDS)), dtype=np.float64)
        block[:, 0] = image_id
        block[:, 1:3] = boxes[:, :2].numpy()
        block[:, 3:5] = (boxes[:, 2:] - boxes[:, :2]).numpy()
        block[:, 5] = found["scores"].detach().float().cpu().numpy()
        block[:, 6] = category_ids(found["labels"].detach().cpu().numpy(), label_to_cat_id)
        rows.append(block)
    return np.concatenate(rows) if rows else np.zeros((0, len(ROW_FIELDS)))


def rows_to_results(rows: np.ndarray, file_name: str | None = None) -> list[dict]:
    """Rows as the entries of a COCO results JSON file (boxes rounded to 0.01 pixel, scores to 1e-4), each
    with `file_name` when given."""
    results = []
    for image_id, x, y, w, h, score, category_id in rows.tolist():
        entry = {"image_id": int(image_id)}
        if file_name is not None:
            entry["file_name"] = file_name
        entry.update(
            {"category_id": int(category_id), "bbox": [round(v, 2) for v in (x, y, w, h)], "score": round(score, 4)}
        )
        results.append(entry)
    return results
