"""`build_dataset`: the COCO 2017 train or val set through the backend the data settings name."""

import os
from collections.abc import Mapping
from typing import Any

from torch.utils.data import Dataset

from deformable_detr.config.data import DataSettings
from deformable_detr.data import paths
from deformable_detr.data.coco import CocoDetection, load_coco
from deformable_detr.data.download import ensure_coco
from deformable_detr.data.fake import FakeCocoDetection
from deformable_detr.data.stores import LocalImageStore, cache_file
from deformable_detr.data.transforms import make_transforms

# The fake backend draws train and val items from different seeds, as two different image sets.
FAKE_SEEDS = {"train": 0, "val": 1}


def annotations_dir(settings: DataSettings) -> str:
    """Where annotation JSONs are read (local) or cached (gcs): `annotations_dir` when set, else the
    dataset's own folder (local) or a per-user cache folder of the bucket (gcs)."""
    if settings.annotations_dir is not None:
        return settings.annotations_dir
    if settings.backend == "local":
        return os.path.join(settings.data_dir, paths.ANNOTATIONS_FOLDER)
    cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_root, "deformable_detr", "gcs", settings.data_dir, paths.ANNOTATIONS_FOLDER)


def build_dataset(image_set: str, data_config: Mapping[str, Any] | DataSettings) -> Dataset:
    """The COCO 2017 `image_set` ('train' or 'val') through the backend `data_config` names.

    Args:
        data_config: the experiment config's `data:` section, or its parsed `DataSettings`.

    Items are (image float32 [3, H, W] ImageNet-normalised, target dict); the dataset has `.coco` (pycocotools)
    and `.label_to_cat_id` (None when labels are COCO category ids).
    """
    if image_set not in paths.IMAGE_SETS:
        raise ValueError(f"image_set must be one of {paths.IMAGE_SETS}, got {image_set!r}")
    settings = data_config if isinstance(data_config, DataSettings) else DataSettings.from_mapping(data_config)
    transforms = make_transforms(image_set, settings.image_scale, settings.augmentation)
    if settings.backend == "fake":
        return FakeCocoDetection(
            settings.fake_length, transforms, settings.image_scale, settings.cat_ids, seed=FAKE_SEEDS[image_set]
        )
    annotations = os.path.join(annotations_dir(settings), paths.annotation_file_name(image_set))
    if settings.backend == "local":
        ensure_coco(settings.data_dir, annotations, image_set, settings.download, settings.download_url)
        store = LocalImageStore(settings.data_dir)
    else:
        # Imported here: google-cloud-storage is slow to import and only this backend needs it.
        from deformable_detr.data.gcs import GcsImageStore

        store = GcsImageStore(settings.data_dir, settings.retry_timeout_s, settings.retry_initial_backoff_s)
        cache_file(store, f"{paths.ANNOTATIONS_FOLDER}/{paths.annotation_file_name(image_set)}", annotations)
    return CocoDetection(store, paths.image_folder(image_set), load_coco(annotations), transforms, settings.cat_ids)
