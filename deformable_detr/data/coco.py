"""A COCO detection dataset over any image store (local folder, bucket): decode, target, augment."""

import contextlib
import io
import os
from collections.abc import Sequence

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from deformable_detr.data.annotations import coco_to_target
from deformable_detr.data.categories import label_mapping
from deformable_detr.data.images import decode
from deformable_detr.data.stores import ImageStore
from deformable_detr.data.transforms import Target, Transform


def load_coco(annotation_file: str) -> COCO:
    """Load an instances_*.json with pycocotools, with a clear error when the file is missing."""
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(f"annotation file not found: expected {annotation_file}")
    # pycocotools prints progress to stdout; keep the logs for what matters.
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(annotation_file)


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

    Attributes:
        coco: the pycocotools COCO of the items (restricted to `cat_ids` when given).
        label_to_cat_id: COCO category id of each label when `cat_ids` remaps them, else None.
    """

    def __init__(
        self,
        store: ImageStore,
        image_folder: str,
        coco: COCO,
        transforms: Transform,
        cat_ids: Sequence[int] | None = None,
    ) -> None:
        self.store = store
        self.image_folder = image_folder
        self.transforms = transforms
        if cat_ids is not None:
            coco = restrict_to_categories(coco, cat_ids)
        self.label_to_cat_id, self.cat_id_to_label = label_mapping(cat_ids)
        self.coco = coco
        self.ids = sorted(coco.imgs)

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
        image, target = self.load(index)
        return self.transforms(image, target)
