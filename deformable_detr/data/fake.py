"""Fake COCO-like data generated in memory: no files, deterministic per index, fast."""

import contextlib
import io
from functools import cached_property
from typing import Any
from collections.abc import Sequence

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from deformable_detr.data.annotations import coco_to_target
from deformable_detr.data.labels import LabelSpace
from deformable_detr.data.sampling import mix_seed
from deformable_detr.data.transforms import Target, Transform

COCO_CAT_IDS = tuple(range(1, 91))
BASE_HEIGHT, BASE_WIDTH = 480, 640
MIN_SIDE, MAX_SIDE = 16, 128
MAX_OBJECTS = 6


class FakeCocoDetection(Dataset):
    """Noise images with 1 to 6 filled rectangles; item `index` is the same in every process and run.

    Images are round(480 * image_scale) x round(640 * image_scale); boxes have sides in
    [16, 128] * image_scale. Category ids are drawn from `categories` (COCO's 1..90 when None); labels follow
    `label_space` (the category ids themselves when None). `coco` holds the same boxes (before augmentation)
    for evaluation; `label_to_cat_id` maps labels back when they are remapped.
    """

    def __init__(
        self,
        length: int,
        transforms: Transform,
        image_scale: float = 1.0,
        categories: Sequence[int] | None = None,
        seed: int = 0,
        label_space: LabelSpace | None = None,
    ) -> None:
        self.length = length
        self.transforms = transforms
        self.height = max(1, round(BASE_HEIGHT * image_scale))
        self.width = max(1, round(BASE_WIDTH * image_scale))
        self.min_side = max(2, round(MIN_SIDE * image_scale))
        self.max_side = max(self.min_side, min(round(MAX_SIDE * image_scale), self.height, self.width))
        self.seed = seed
        self.cat_ids = tuple(categories) if categories is not None else COCO_CAT_IDS
        if label_space is None:
            label_space = LabelSpace.of(self.category_names(), None, None, "the fake data")
        self.label_space = label_space
        self.label_to_cat_id = label_space.label_to_cat_id
        self.cat_id_to_label = label_space.cat_id_to_label

    def category_names(self) -> dict[int, str]:
        return {cat_id: f"category_{cat_id}" for cat_id in self.cat_ids}

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> torch.Generator:
        if not 0 <= index < self.length:
            raise IndexError(f"fake dataset index {index} out of range [0, {self.length})")
        return torch.Generator().manual_seed(mix_seed(self.seed, index))

    def image_id(self, index: int) -> int:
        return index + 1  # COCO image ids start at 1

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """The COCO annotation records of item `index` (its boxes before augmentation)."""
        generator = self._generator(index)
        count = int(torch.randint(1, MAX_OBJECTS + 1, (), generator=generator))
        records = []
        for number in range(count):
            width, height = (int(v) for v in torch.randint(self.min_side, self.max_side + 1, (2,), generator=generator))
            x = int(torch.randint(0, self.width - width + 1, (), generator=generator))
            y = int(torch.randint(0, self.height - height + 1, (), generator=generator))
            category = self.cat_ids[int(torch.randint(len(self.cat_ids), (), generator=generator))]
            records.append(
                {
                    "id": self.image_id(index) * 100 + number,
                    "image_id": self.image_id(index),
                    "category_id": category,
                    "bbox": [float(x), float(y), float(width), float(height)],
                    "area": float(width * height),
                    "iscrowd": 0,
                }
            )
        return records

    def image(self, index: int, records: list[dict[str, Any]]) -> torch.Tensor:
        """uint8 [3, H, W]: uniform noise with each box filled by a colour that depends on its category."""
        generator = self._generator(index)
        # Drawn in HWC memory, like decoded images, so that the resize takes the fast channels-last path.
        image = torch.randint(0, 256, (self.height, self.width, 3), dtype=torch.uint8, generator=generator)
        image = image.permute(2, 0, 1)
        for record in records:
            x, y, width, height = (int(v) for v in record["bbox"])
            colour = torch.tensor([(record["category_id"] * k) % 256 for k in (37, 91, 151)], dtype=torch.uint8)
            image[:, y : y + height, x : x + width] = colour.view(3, 1, 1)
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        records = self.annotations(index)
        image = self.image(index, records)
        target = coco_to_target(records, self.image_id(index), self.height, self.width, self.cat_id_to_label)
        return self.transforms(image, target)

    @cached_property
    def coco(self) -> COCO:
        """A pycocotools COCO of all items, built on first use."""
        coco = COCO()
        coco.dataset = {
            "images": [
                {"id": self.image_id(i), "file_name": f"fake_{i}.jpg", "height": self.height, "width": self.width}
                for i in range(self.length)
            ],
            "annotations": [record for i in range(self.length) for record in self.annotations(i)],
            "categories": [
                {"id": c, "name": name, "supercategory": "fake"} for c, name in self.category_names().items()
            ],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco
