"""The experiment config's `data:` section as `DataSettings`: which backend, where the images are, how they
are prepared, how many loader workers read them. `trainer` in that section is the run's (`RunSettings`)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deformable_detr.config.parsing import field_names, parse_settings, reject_unknown, require, require_choice

SECTION = "data"
BACKENDS = ("gcs", "local", "fake")
# Training augmentations: the authors' (flip, multi-scale resize, random crop), or a flip before the
# validation resize, which keeps every object whole and at the size it has in validation.
AUGMENTATIONS = ("detr", "flip")
DEFAULT_DOWNLOAD_URL = "http://images.cocodataset.org"
# The key of the data section that holds the run settings.
TRAINER_KEY = "trainer"


@dataclass(frozen=True)
class DataSettings:
    """Every key of the `data:` section but `trainer`, with its default; see docs/data.md for their meaning."""

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
        return parse_settings(cls, SECTION, given)

    def validate(self) -> None:
        require_choice(SECTION, "backend", self.backend, BACKENDS)
        require_choice(SECTION, "augmentation", self.augmentation, AUGMENTATIONS)
        if self.backend in ("gcs", "local"):
            require(SECTION, "data_dir", bool(self.data_dir),
                    f"is required for backend {self.backend!r} (bucket name or folder)")
        if self.backend == "gcs":
            require(SECTION, "data_dir", "/" not in self.data_dir,
                    f"must be a bare bucket name for backend 'gcs', got {self.data_dir!r}")
        require(SECTION, "num_workers", self.num_workers >= 0, f"must be >= 0, got {self.num_workers}")
        require(SECTION, "fake_length", self.fake_length >= 1, f"must be >= 1, got {self.fake_length}")
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
