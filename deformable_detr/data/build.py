"""`build_dataset`: a split of a COCO-format dataset through the backend the data settings name, checked before
it is used, with labels from a `LabelSpace`."""

import os
from collections.abc import Mapping
from typing import Any

from torch.utils.data import Dataset

from deformable_detr.config.data import FAKE_COCO_CATEGORIES, DataSettings
from deformable_detr.data import paths
from deformable_detr.data.categories import category_names
from deformable_detr.data.checks import check_dataset
from deformable_detr.data.coco import CocoDetection, load_coco, restrict_to_categories
from deformable_detr.data.download import ensure_coco
from deformable_detr.data.fake import FakeCocoDetection
from deformable_detr.data.labels import LabelSpace
from deformable_detr.data.stores import ImageStore, LocalImageStore, cache_file
from deformable_detr.data.transforms import make_transforms

# The fake backend draws train and val items from different seeds, as two different image sets.
FAKE_SEEDS = {"train": 0, "val": 1}


def cache_root(settings: DataSettings) -> str:
    """The per-user folder where a bucket's annotation files are cached:
    `$XDG_CACHE_HOME/deformable_detr/<backend>/<bucket>[/<prefix>]` (`~/.cache` without XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if settings.backend == "s3":
        return os.path.join(base, "deformable_detr", "s3", settings.bucket, *filter(None, settings.prefix.split("/")))
    return os.path.join(base, "deformable_detr", "gcs", settings.data_dir)


def annotation_file(settings: DataSettings, image_set: str) -> str:
    """The local path of `image_set`'s annotation file: read there (local) or cached there (gcs, s3).

    `annotations_dir`, when set, holds the file by its base name; otherwise the file is at its configured path
    under `data_dir` (local) or under the bucket's cache folder (gcs, s3; see `cache_root`).
    """
    relative = settings.split(image_set).annotations
    if settings.annotations_dir is not None:
        return os.path.join(settings.annotations_dir, os.path.basename(relative))
    if settings.backend == "local":
        return os.path.join(settings.data_dir, relative)
    return os.path.join(cache_root(settings), *relative.strip("/").split("/"))


def open_store(settings: DataSettings) -> ImageStore:
    """The image store of a local, gcs or s3 backend."""
    if settings.backend == "local":
        return LocalImageStore(settings.data_dir)
    if settings.backend == "gcs":
        # Imported here: google-cloud-storage is slow to import and only this backend needs it.
        from deformable_detr.data.gcs import GcsImageStore

        return GcsImageStore(settings.data_dir, settings.retry_timeout_s, settings.retry_initial_backoff_s)
    from deformable_detr.data.s3 import S3ImageStore

    return S3ImageStore(
        settings.bucket, settings.prefix, settings.endpoint_url, settings.retry_mode, settings.max_attempts,
        settings.region,
    )


def build_dataset(
    image_set: str, data_config: Mapping[str, Any] | DataSettings, label_space: LabelSpace | None = None
) -> Dataset:
    """The `image_set` ('train' or 'val') of the dataset `data_config` describes.

    Args:
        data_config: the experiment config's `data:` section, or its parsed `DataSettings`.
        label_space: the labels to use (the training set's, for a validation set); by default they come from
            this split's own categories and `data.labels` (category ids when unset).

    The split is checked first (`data.check`, see `deformable_detr.data.checks`). Items are (image float32
    [3, H, W] ImageNet-normalised, target dict); the dataset has `.coco` (pycocotools), `.label_space` and
    `.label_to_cat_id` (None when labels are category ids).
    """
    if image_set not in paths.IMAGE_SETS:
        raise ValueError(f"image_set must be one of {paths.IMAGE_SETS}, got {image_set!r}")
    settings = data_config if isinstance(data_config, DataSettings) else DataSettings.from_mapping(data_config)
    transforms = make_transforms(image_set, settings.image_scale, settings.augmentation)
    if settings.backend == "fake":
        categories = settings.cat_ids or range(1, (settings.fake_categories or FAKE_COCO_CATEGORIES) + 1)
        if label_space is None:
            names = {cat_id: f"category_{cat_id}" for cat_id in categories}
            label_space = LabelSpace.of(names, settings.labels, settings.cat_ids, "the fake data")
        return FakeCocoDetection(settings.fake_length, transforms, settings.image_scale, list(categories),
                                 seed=FAKE_SEEDS[image_set], label_space=label_space)
    split = settings.split(image_set)
    annotations = annotation_file(settings, image_set)
    store = open_store(settings)
    if settings.backend == "local":
        if getattr(settings, image_set) is None:  # COCO 2017's layout: the official zips can fill it
            ensure_coco(settings.data_dir, annotations, image_set, settings.download, settings.download_url)
    else:
        cache_file(store, split.annotations.strip("/"), annotations)
    coco = load_coco(annotations)
    if settings.cat_ids is not None:
        coco = restrict_to_categories(coco, settings.cat_ids)
    if label_space is None:
        label_space = LabelSpace.of(category_names(coco), settings.labels, settings.cat_ids, annotations)
    images = split.images.strip("/")
    if settings.check != "off":
        coco = check_dataset(coco, store, images, label_space.names, f"{annotations} ({image_set})", settings.check)
    return CocoDetection(store, images, coco, transforms, label_space, settings.on_bad_image)
