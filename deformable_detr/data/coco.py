"""A COCO detection dataset over any image store (local folder, bucket): decode, target, augment."""

import contextlib
import io
import json
import logging
import os
from collections.abc import Sequence

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from deformable_detr.data.annotations import coco_to_target
from deformable_detr.data.images import ImageDecodeError, decode
from deformable_detr.data.labels import LabelSpace
from deformable_detr.data.stores import ImageStore
from deformable_detr.data.transforms import Target, Transform

logger = logging.getLogger(__name__)


def load_coco(annotation_file: str) -> COCO:
    """Load a COCO-format annotation file with pycocotools, with a clear error when the file is missing."""
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(f"annotation file not found: expected {annotation_file}")
    # pycocotools prints progress to stdout; keep the logs for what matters.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(annotation_file)
    except json.JSONDecodeError as error:
        raise ValueError(f"annotation file {annotation_file} is not valid JSON: {error}") from error


def restrict_to_categories(coco: COCO, cat_ids: Sequence[int]) -> COCO:
    """A new COCO with only the images that hold one of `cat_ids`, and only those categories' annotations."""
    unknown = [c for c in cat_ids if c not in coco.cats]
    if unknown:
        raise ValueError(f"data.cat_ids: category ids {unknown} are not in the annotation file ({sorted(coco.cats)})")
    wanted = set(cat_ids)
    annotations = [a for a in coco.dataset["annotations"] if a["category_id"] in wanted]
    image_ids = {a["image_id"] for a in annotations}
    subset = COCO()
    subset.dataset = {
        **{key: value for key, value in coco.dataset.items() if key not in ("images", "annotations", "categories")},
        "images": [image for image in coco.dataset["images"] if image["id"] in image_ids],
        "annotations": annotations,
        "categories": [category for category in coco.dataset["categories"] if category["id"] in wanted],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        subset.createIndex()
    return subset


class CocoDetection(Dataset):
    """Items are (image float32 [3, H, W], target) as documented in docs/data.md.

    Args:
        image_folder: the folder (or key prefix) of the store that records' `file_name`s are relative to.
        coco: the annotations, already restricted to a category subset and checked (see `build_dataset`).
        label_space: how category ids become labels.
        on_bad_image: 'error' raises ImageDecodeError for an image that cannot be decoded; 'skip' logs a
            warning and gives the next index whose image decodes instead (the same one every time).

    Attributes:
        coco: the pycocotools COCO of the items.
        label_to_cat_id: category id of each label when labels are remapped, else None.
        skipped: {image id: reason} of the images this process left out (on_bad_image 'skip').
    """

    def __init__(
        self,
        store: ImageStore,
        image_folder: str,
        coco: COCO,
        transforms: Transform,
        label_space: LabelSpace,
        on_bad_image: str = "error",
    ) -> None:
        self.store = store
        self.image_folder = image_folder
        self.transforms = transforms
        self.label_space = label_space
        self.label_to_cat_id = label_space.label_to_cat_id
        self.cat_id_to_label = label_space.cat_id_to_label
        self.on_bad_image = on_bad_image
        self.coco = coco
        self.ids = sorted(coco.imgs)
        self.skipped: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[torch.Tensor, Target]:
        """The decoded uint8 image [3, H, W] and its un-augmented target."""
        image_id = self.ids[index]
        path = f"{self.image_folder}/{self.coco.imgs[image_id]['file_name']}"
        try:
            content = self.store.read(path)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"image id {image_id}: {error}") from error
        image = decode(content, f"image id {image_id} ({self.store.describe(path)})")
        height, width = image.shape[-2:]
        target = coco_to_target(self.coco.imgToAnns[image_id], image_id, height, width, self.cat_id_to_label)
        return image, target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        if self.on_bad_image == "error":
            return self.transforms(*self.load(index))
        for step in range(len(self)):
            candidate = (index + step) % len(self)
            try:
                image, target = self.load(candidate)
            except ImageDecodeError as error:
                self._left_out(self.ids[candidate], str(error))
                continue
            return self.transforms(image, target)
        raise ImageDecodeError(
            f"data.on_bad_image: skip: none of the {len(self)} images of {self.image_folder} decodes"
        )

    def _left_out(self, image_id: int, reason: str) -> None:
        if image_id in self.skipped:
            return
        self.skipped[image_id] = reason
        logger.warning(
            "data.on_bad_image: skip: left out image id %d (%s); %d image(s) left out so far in this process; "
            "its place goes to the next image, and COCO evaluation leaves it out",
            image_id, reason, len(self.skipped),
        )
