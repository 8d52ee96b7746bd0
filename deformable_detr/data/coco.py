"""A COCO detection dataset over any image store (local folder, GCS bucket): decode, target, augment."""

import contextlib
import io
import os
from typing import Protocol
from collections.abc import Sequence

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

from deformable_detr.data.annotations import coco_to_target
from deformable_detr.data.transforms import Target, Transform


class ImageDecodeError(RuntimeError):
    """An image file that is corrupt, truncated or not an image."""


class ImageStore(Protocol):
    """Where image bytes come from; `path` is relative to the dataset root, e.g. 'train2017/x.jpg'."""

    def read(self, path: str) -> bytes: ...

    def describe(self, path: str) -> str:
        """A full location for error messages (file path or gs:// URL)."""
        ...


class LocalImageStore:
    """Images in a folder on disk."""

    def __init__(self, root: str) -> None:
        self.root = root

    def read(self, path: str) -> bytes:
        with open(os.path.join(self.root, path), "rb") as file:
            return file.read()

    def describe(self, path: str) -> str:
        return os.path.join(self.root, path)


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


def decode(data: bytes, location: str, image_id: int) -> torch.Tensor:
    """JPEG/PNG bytes -> uint8 [3, H, W] (libjpeg-turbo through torchvision; grey images become RGB)."""
    if not data:
        raise ImageDecodeError(f"cannot decode image id {image_id} ({location}): the file is empty")
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise ImageDecodeError(f"cannot decode image id {image_id} ({location}): {error}") from error


class CocoDetection(Dataset):
    """Items are (image float32 [3, H, W], target) as documented in the README (section "Data").

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
            self.label_to_cat_id: list[int] | None = list(cat_ids)
            self.cat_id_to_label: dict[int, int] | None = {c: label for label, c in enumerate(cat_ids)}
        else:
            self.label_to_cat_id = None
            self.cat_id_to_label = None
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
        image = decode(content, self.store.describe(path), image_id)
        height, width = image.shape[-2:]
        target = coco_to_target(self.coco.imgToAnns[image_id], image_id, height, width, self.cat_id_to_label)
        return image, target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, target = self.load(index)
        return self.transforms(image, target)
