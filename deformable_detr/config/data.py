"""The experiment config's `data:` section, validated into a typed `DataConfig`."""

import os
from dataclasses import dataclass
from typing import Any

from deformable_detr.data.transforms import AUGMENTATIONS

BACKENDS = ("gcs", "local", "fake")
IMAGE_SETS = ("train", "val")
# Keys whose value is one of a fixed set.
_CHOICES = {"backend": BACKENDS, "augmentation": AUGMENTATIONS}
DEFAULT_DOWNLOAD_URL = "http://images.cocodataset.org"


@dataclass(frozen=True)
class DataConfig:
    """Every key of the `data:` section, with its default; see the README (section "Data") for their meaning."""

    backend: str
    data_dir: str | None = None
    annotations_dir: str | None = None
    download: bool = True
    download_url: str = DEFAULT_DOWNLOAD_URL
    num_workers: int = 4
    fake_length: int = 1000
    cat_ids: tuple[int, ...] | None = None
    image_scale: float = 1.0
    augmentation: str = "detr"
    retry_timeout_s: float = 120.0
    retry_initial_backoff_s: float = 1.0


# key -> (accepted types, description used in error messages)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "backend": ((str,), "one of " + ", ".join(BACKENDS)),
    "data_dir": ((str,), "a string"),
    "annotations_dir": ((str,), "a string"),
    "download": ((bool,), "a bool"),
    "download_url": ((str,), "a string"),
    "num_workers": ((int,), "an int"),
    "fake_length": ((int,), "an int"),
    "cat_ids": ((list, tuple), "a list of ints"),
    "image_scale": ((float, int), "a number"),
    "augmentation": ((str,), "one of " + ", ".join(AUGMENTATIONS)),
    "retry_timeout_s": ((float, int), "a number"),
    "retry_initial_backoff_s": ((float, int), "a number"),
}


def _check_type(key: str, value: Any) -> None:
    types, description = _TYPES[key]
    # bool is an int subclass: `num_workers: true` is a mistake, not 1.
    if isinstance(value, bool) and bool not in types:
        raise ValueError(f"data.{key} must be {description}, got {value!r}")
    if not isinstance(value, types):
        raise ValueError(f"data.{key} must be {description}, got {value!r} ({type(value).__name__})")


def parse_data_config(config: dict[str, Any]) -> DataConfig:
    """Validate the `data:` section (a plain dict) and fill in defaults.

    Raises:
        ValueError naming the key for an unknown key, a missing required key, a wrong type or a bad value.
    """
    if not isinstance(config, dict):
        raise ValueError(f"data config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(_TYPES))
    if unknown:
        raise ValueError(f"data: unknown key(s) {unknown}; known keys are {sorted(_TYPES)}")
    values = {key: value for key, value in config.items() if value is not None}
    for key, value in values.items():
        _check_type(key, value)

    if "backend" not in values:
        raise ValueError(f"data.backend is required (one of {', '.join(BACKENDS)})")
    for key, choices in _CHOICES.items():
        if key in values and values[key] not in choices:
            raise ValueError(f"data.{key} must be one of {', '.join(choices)}, got {values[key]!r}")
    backend = values["backend"]
    if backend in ("gcs", "local") and not values.get("data_dir"):
        raise ValueError(f"data.data_dir is required for backend {backend!r} (bucket name or folder)")
    if backend == "gcs" and "/" in values["data_dir"]:
        raise ValueError(f"data.data_dir must be a bare bucket name for backend 'gcs', got {values['data_dir']!r}")

    if values.get("num_workers", 0) < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {values['num_workers']}")
    if values.get("fake_length", 1) < 1:
        raise ValueError(f"data.fake_length must be >= 1, got {values['fake_length']}")
    for key in ("image_scale", "retry_timeout_s"):
        if key in values and not values[key] > 0:
            raise ValueError(f"data.{key} must be > 0, got {values[key]}")
    if values.get("retry_initial_backoff_s", 0) < 0:
        raise ValueError(f"data.retry_initial_backoff_s must be >= 0, got {values['retry_initial_backoff_s']}")

    if "cat_ids" in values:
        cat_ids = values["cat_ids"]
        if len(cat_ids) == 0 or not all(isinstance(c, int) and not isinstance(c, bool) for c in cat_ids):
            raise ValueError(f"data.cat_ids must be a non-empty list of ints (COCO category ids), got {cat_ids!r}")
        if len(set(cat_ids)) != len(cat_ids):
            raise ValueError(f"data.cat_ids has duplicates: {cat_ids!r}")
        if any(c < 1 for c in cat_ids):
            raise ValueError(f"data.cat_ids must be positive COCO category ids, got {cat_ids!r}")
        values["cat_ids"] = tuple(cat_ids)
    for key in ("image_scale", "retry_timeout_s", "retry_initial_backoff_s"):
        if key in values:
            values[key] = float(values[key])
    return DataConfig(**values)


def default_annotations_dir(config: DataConfig) -> str:
    """Where annotation JSONs are read (local) or cached (gcs) when `annotations_dir` is not set."""
    if config.annotations_dir is not None:
        return config.annotations_dir
    if config.backend == "local":
        return os.path.join(config.data_dir, "annotations")
    cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_root, "deformable_detr", "gcs", config.data_dir, "annotations")
