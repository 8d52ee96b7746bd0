"""The experiment config's `data:` section as `DataSettings`: which backend, where each split's images and
annotation file are, how labels relate to category ids, what to do with bad data, how images are prepared and
how many loader workers read them. `trainer` in that section is the run's (`RunSettings`)."""

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deformable_detr.config.parsing import (
    field_names,
    parse_settings,
    read_fields,
    reject_unknown,
    require,
    require_choice,
)

SECTION = "data"
BACKENDS = ("gcs", "local", "s3", "fake")
REMOTE_BACKENDS = ("gcs", "s3")
# Training augmentations: the authors' (flip, multi-scale resize, random crop), or a flip before the
# validation resize, which keeps every object whole and at the size it has in validation.
AUGMENTATIONS = ("detr", "flip")
# How model labels relate to category ids: the ids themselves (COCO 2017 and the authors' checkpoints:
# labels 1..90, num_classes 91), or 0..K-1 in increasing category id order.
LABELS = ("category_ids", "contiguous")
# What the data check before training does with the problems it finds.
CHECKS = ("stop", "skip", "off")
# What a run does with an image that cannot be decoded.
ON_BAD_IMAGE = ("error", "skip")
S3_RETRY_MODES = ("standard", "adaptive", "legacy")
DEFAULT_DOWNLOAD_URL = "http://images.cocodataset.org"
# The key of the data section that holds the run settings.
TRAINER_KEY = "trainer"
SPLIT_KEYS = ("train", "val")
# The number of category ids the fake backend draws from by default: COCO's 1..90.
FAKE_COCO_CATEGORIES = 90
AUTO = "auto"


@dataclass(frozen=True)
class SplitSettings:
    """Where one split lives, relative to `data_dir` (local), the bucket (gcs) or the bucket prefix (s3).

    images: the folder (or key prefix) of the image files; annotation records' `file_name` is relative to it.
    annotations: the COCO-format annotation file.
    """

    images: str
    annotations: str

    def validate(self) -> None:
        pass


def coco2017_split(image_set: str) -> SplitSettings:
    """COCO 2017's own layout: `<image_set>2017/` and `annotations/instances_<image_set>2017.json`."""
    return SplitSettings(images=f"{image_set}2017", annotations=f"annotations/instances_{image_set}2017.json")


@dataclass(frozen=True)
class DataSettings:
    """Every key of the `data:` section but `trainer`, with its default; see docs/data.md for their meaning.

    `labels` None means: contiguous when the hyperparameter `num_classes` is 'auto', category ids otherwise
    (`for_model` resolves it; `build_dataset` alone takes category ids).
    """

    backend: str
    data_dir: str | None = None
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    train: SplitSettings | None = None
    val: SplitSettings | None = None
    annotations_dir: str | None = None
    labels: str | None = None
    check: str = "stop"
    on_bad_image: str = "error"
    download: bool = True
    download_url: str = DEFAULT_DOWNLOAD_URL
    num_workers: int = 4
    fake_length: int = 1000
    fake_categories: int | None = None
    cat_ids: tuple[int, ...] | None = None
    image_scale: float = 1.0
    augmentation: str = "detr"
    retry_timeout_s: float = 120.0
    retry_initial_backoff_s: float = 1.0
    retry_mode: str = "standard"
    max_attempts: int = 10

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> "DataSettings":
        """Validate the `data:` section and fill in defaults (a key set to null takes its default).

        Raises:
            ValueError naming the key for an unknown key, a missing required key, a wrong type or a bad value.
        """
        if not isinstance(section, Mapping):
            raise ValueError(f"data: the section must be a mapping, got {type(section).__name__}")
        reject_unknown(SECTION, section, field_names(cls) | {TRAINER_KEY})
        given = {key: value for key, value in section.items() if value is not None and key != TRAINER_KEY}
        require(SECTION, "backend", "backend" in given, f"is required (one of {', '.join(BACKENDS)})")
        splits = {key: _parse_split(key, given.pop(key)) for key in SPLIT_KEYS if key in given}
        settings = cls(**read_fields(cls, SECTION, given), **splits)
        settings.validate()
        return settings

    def split(self, image_set: str) -> SplitSettings:
        """The images folder and annotation file of `image_set`: as configured, else COCO 2017's."""
        return getattr(self, image_set) or coco2017_split(image_set)

    def for_model(self, num_classes: int | str) -> "DataSettings":
        """These settings with what depends on the model's `num_classes` filled in: `labels` (contiguous for
        'auto'), and for the fake backend, category ids that fit a model of fewer than 91 classes."""
        labels = self.labels or ("contiguous" if num_classes == AUTO else "category_ids")
        fake_categories = self.fake_categories
        if fake_categories is None and labels == "category_ids" and isinstance(num_classes, int):
            fake_categories = max(1, min(FAKE_COCO_CATEGORIES, num_classes - 1))
        return dataclasses.replace(self, labels=labels, fake_categories=fake_categories)

    def validate(self) -> None:
        require_choice(SECTION, "backend", self.backend, BACKENDS)
        require_choice(SECTION, "augmentation", self.augmentation, AUGMENTATIONS)
        require_choice(SECTION, "check", self.check, CHECKS)
        require_choice(SECTION, "on_bad_image", self.on_bad_image, ON_BAD_IMAGE)
        require_choice(SECTION, "retry_mode", self.retry_mode, S3_RETRY_MODES)
        if self.labels is not None:
            require_choice(SECTION, "labels", self.labels, LABELS)
        if self.backend in ("gcs", "local"):
            require(SECTION, "data_dir", bool(self.data_dir),
                    f"is required for backend {self.backend!r} (bucket name or folder)")
        if self.backend == "gcs":
            require(SECTION, "data_dir", "/" not in self.data_dir,
                    f"must be a bare bucket name for backend 'gcs', got {self.data_dir!r}")
        if self.backend == "s3":
            require(SECTION, "bucket", bool(self.bucket), "is required for backend 's3' (a bare bucket name)")
            require(SECTION, "bucket", "/" not in self.bucket and not self.bucket.startswith("s3:"),
                    f"must be a bare bucket name (a folder inside goes in data.prefix), got {self.bucket!r}")
            require(SECTION, "data_dir", self.data_dir is None,
                    "is not read by backend 's3': name the bucket in data.bucket and the folder in data.prefix")
        else:
            for key in ("bucket", "endpoint_url", "region"):
                require(SECTION, key, getattr(self, key) is None, f"is only read by backend 's3', not {self.backend!r}")
            require(SECTION, "prefix", not self.prefix, f"is only read by backend 's3', not {self.backend!r}")
        require(SECTION, "num_workers", self.num_workers >= 0, f"must be >= 0, got {self.num_workers}")
        require(SECTION, "fake_length", self.fake_length >= 1, f"must be >= 1, got {self.fake_length}")
        if self.fake_categories is not None:
            require(SECTION, "fake_categories", self.fake_categories >= 1, f"must be >= 1, got {self.fake_categories}")
        require(SECTION, "max_attempts", self.max_attempts >= 1,
                f"must be >= 1 (the first attempt counts), got {self.max_attempts}")
        for key in ("image_scale", "retry_timeout_s"):
            require(SECTION, key, getattr(self, key) > 0, f"must be > 0, got {getattr(self, key)}")
        require(SECTION, "retry_initial_backoff_s", self.retry_initial_backoff_s >= 0,
                f"must be >= 0, got {self.retry_initial_backoff_s}")
        if self.cat_ids is not None:
            cat_ids = list(self.cat_ids)
            require(SECTION, "cat_ids", len(cat_ids) > 0, "must be a non-empty list of COCO category ids")
            require(SECTION, "cat_ids", len(set(cat_ids)) == len(cat_ids), f"has duplicates: {cat_ids!r}")
            require(SECTION, "cat_ids", all(c >= 1 for c in cat_ids),
                    f"must be positive COCO category ids, got {cat_ids!r}")
            require(SECTION, "labels", self.labels in (None, "contiguous"),
                    "cannot be 'category_ids' with data.cat_ids (a category subset has labels 0..K-1 in the "
                    "order of cat_ids)")
        if self.annotations_dir is not None and self.train is not None and self.val is not None:
            # annotations_dir holds the files by their base names: two different files must not share one.
            same_name = os.path.basename(self.train.annotations) == os.path.basename(self.val.annotations)
            require(SECTION, "annotations_dir", not same_name or self.train.annotations == self.val.annotations,
                    f"holds annotation files by name, but data.train.annotations ({self.train.annotations!r}) and "
                    f"data.val.annotations ({self.val.annotations!r}) have the same name")


def _parse_split(key: str, value: Any) -> SplitSettings:
    section = f"{SECTION}.{key}"
    if not isinstance(value, Mapping):
        raise ValueError(f"{section} must be a mapping with 'images' and 'annotations', got {value!r}")
    reject_unknown(section, value, field_names(SplitSettings))
    for name in ("images", "annotations"):
        require(section, name, value.get(name) is not None,
                f"is required: the {'image folder' if name == 'images' else 'annotation file'} of the split")
        require(section, name, isinstance(value[name], str) and value[name].strip("/") != "",
                f"must be a non-empty path, got {value[name]!r}")
    return parse_settings(SplitSettings, section, value)
