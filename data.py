"""Data entry point: `build_dataset`, `collate_fn` and worker seeding for the trial.

The settings come from the experiment config's `data:` section (`context.get_data_config()`); see
the README (section "Data") for the keys, the layout of each backend and the item format.
"""

import os
from typing import Any

import torch
from torch.utils.data import Dataset

from deformable_detr.data.batching import pad_images
from deformable_detr.data.coco import CocoDetection, LocalImageStore, load_coco
from deformable_detr.config.data import IMAGE_SETS, DataConfig, default_annotations_dir, parse_data_config
from deformable_detr.data.download import ensure_coco
from deformable_detr.data.fake import FakeCocoDetection
from deformable_detr.data.seeding import make_generator, seed_worker
from deformable_detr.data.transforms import make_transforms

__all__ = ["build_dataset", "collate_fn", "make_generator", "seed_worker", "parse_data_config"]

# The fake backend draws train and val items from different seeds, as two different image sets.
FAKE_SEEDS = {"train": 0, "val": 1}


def annotation_file(config: DataConfig, image_set: str) -> str:
    return os.path.join(default_annotations_dir(config), f"instances_{image_set}2017.json")


def build_dataset(image_set: str, config: dict[str, Any]) -> Dataset:
    """The COCO 2017 `image_set` ('train' or 'val') through the backend `config['backend']` names.

    Items are (image float32 [3, H, W] ImageNet-normalised, target dict); the dataset has `.coco` (pycocotools)
    and `.label_to_cat_id` (None when labels are COCO category ids).
    """
    if image_set not in IMAGE_SETS:
        raise ValueError(f"image_set must be one of {IMAGE_SETS}, got {image_set!r}")
    settings = parse_data_config(config)
    transforms = make_transforms(image_set, settings.image_scale, settings.augmentation)
    if settings.backend == "fake":
        return FakeCocoDetection(
            settings.fake_length, transforms, settings.image_scale, settings.cat_ids, seed=FAKE_SEEDS[image_set]
        )
    annotations = annotation_file(settings, image_set)
    if settings.backend == "local":
        ensure_coco(settings.data_dir, annotations, image_set, settings.download, settings.download_url)
        store = LocalImageStore(settings.data_dir)
    else:
        # Imported here: google-cloud-storage is slow to import and only this backend needs it.
        from deformable_detr.data.gcs import GcsImageStore

        store = GcsImageStore(settings.data_dir, settings.retry_timeout_s, settings.retry_initial_backoff_s)
        store.cache_file(f"annotations/instances_{image_set}2017.json", annotations)
    return CocoDetection(store, f"{image_set}2017", load_coco(annotations), transforms, settings.cat_ids)


def collate_fn(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Batch items of different sizes: images [B, 3, H, W] zero-padded bottom/right, mask bool [B, H, W]
    (True at padding) and the list of B targets."""
    images, targets = zip(*batch)
    padded, mask = pad_images(list(images))
    return padded, mask, list(targets)
