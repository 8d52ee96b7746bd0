"""COCO categories: the 2017 names by category id, and the mapping between model labels and category ids.

Labels are the category ids themselves, unless a dataset is restricted to `cat_ids`: then label i is
`cat_ids[i]` (`label_to_cat_id`), so that the classifier has only as many outputs as categories.
"""

from collections.abc import Sequence

import numpy as np
from pycocotools.coco import COCO

# The 2017 detection categories (ids 1..90 with gaps, 80 in use).

COCO_CATEGORY_NAMES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}


def label_mapping(cat_ids: Sequence[int] | None) -> tuple[list[int] | None, dict[int, int] | None]:
    """(label_to_cat_id, cat_id_to_label) for a restriction to `cat_ids`; (None, None) without one."""
    if cat_ids is None:
        return None, None
    return list(cat_ids), {cat_id: label for label, cat_id in enumerate(cat_ids)}


def category_ids(labels: np.ndarray, label_to_cat_id: Sequence[int] | None) -> np.ndarray:
    """The COCO category id of each model label in `labels` [K] (the labels themselves when not remapped)."""
    labels = np.asarray(labels)
    return labels if label_to_cat_id is None else np.asarray(label_to_cat_id)[labels]


def category_names(coco: COCO) -> dict[int, str]:
    """{category id: name} of an annotation file's categories."""
    return {category["id"]: category["name"] for category in coco.loadCats(coco.getCatIds())}
