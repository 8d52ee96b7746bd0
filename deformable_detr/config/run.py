"""The run settings that are not searched over, from the config's `data.trainer` mapping: `RunSettings`
(validation, checkpoint and reporting periods, the COCO evaluator, the warm-start checkpoint)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deformable_detr.config.parsing import field_names, read_fields, reject_unknown, require, require_choice

SECTION = "data.trainer"
PERIOD_UNITS = ("batches", "epochs")
EVALUATORS = ("pycocotools", "faster_coco_eval")


@dataclass(frozen=True)
class Period:
    """A length of training: `length` batches or epochs (`unit`)."""

    unit: str
    length: int

    @classmethod
    def parse(cls, section: str, key: str, value: Any) -> "Period":
        """`{batches: N}` or `{epochs: N}` with N > 0."""
        if (
            not isinstance(value, Mapping)
            or len(value) != 1
            or next(iter(value)) not in PERIOD_UNITS
            or isinstance(next(iter(value.values())), bool)
            or not isinstance(next(iter(value.values())), int)
            or next(iter(value.values())) <= 0
        ):
            raise ValueError(f"{section}.{key} must be {{batches: N}} or {{epochs: N}} with N > 0, got {value!r}")
        unit, length = next(iter(value.items()))
        return cls(unit, length)


@dataclass(frozen=True)
class RunSettings:
    """validation_period / checkpoint_period / reporting_period: how often the trainer validates, saves and
    reports. coco_evaluator: "pycocotools" or "faster_coco_eval". warm_start: a released checkpoint (path or
    http(s) URL) the model starts from. keep_checkpoints: how many of its latest checkpoints a local run keeps
    (on a cluster, the experiment's checkpoint_storage settings govern)."""

    validation_period: Period = field(default_factory=lambda: Period("epochs", 1))
    checkpoint_period: Period = field(default_factory=lambda: Period("epochs", 1))
    reporting_period: Period = field(default_factory=lambda: Period("batches", 50))
    coco_evaluator: str = "pycocotools"
    warm_start: str | None = None
    keep_checkpoints: int = 2

    @classmethod
    def from_mapping(cls, trainer: Mapping[str, Any] | None) -> "RunSettings":
        """From the `data.trainer` mapping (None or absent: every default)."""
        trainer = trainer or {}
        if not isinstance(trainer, Mapping):
            raise ValueError(f"{SECTION} must be a mapping, got {trainer!r}")
        reject_unknown(SECTION, trainer, field_names(cls))
        periods = {key for key in field_names(cls) if key.endswith("_period")}
        values = read_fields(cls, SECTION, {key: value for key, value in trainer.items() if key not in periods})
        values.update({key: Period.parse(SECTION, key, trainer[key]) for key in periods if key in trainer})
        settings = cls(**values)
        require_choice(SECTION, "coco_evaluator", settings.coco_evaluator, EVALUATORS)
        keep = settings.keep_checkpoints
        require(SECTION, "keep_checkpoints", keep >= 1, f"must be >= 1, got {keep}")
        return settings
