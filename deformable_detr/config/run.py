"""Reading an experiment config for a run: fixed hyperparameters for local runs, and the run settings
that are not hyperparameters (`data.trainer`: periods, evaluator, warm start)."""

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import yaml
from determined import pytorch

from deformable_detr.training.optim import OptimizationSettings

PERIOD_UNITS = {"batches": pytorch.Batch, "epochs": pytorch.Epoch}


def _period(value: Any, key: str) -> pytorch.TrainUnit:
    if (
        not isinstance(value, Mapping)
        or len(value) != 1
        or next(iter(value)) not in PERIOD_UNITS
        or not isinstance(next(iter(value.values())), int)
        or next(iter(value.values())) <= 0
    ):
        raise ValueError(f"data.trainer.{key} must be {{batches: N}} or {{epochs: N}} with N > 0, got {value!r}")
    unit, length = next(iter(value.items()))
    return PERIOD_UNITS[unit](length)


@dataclasses.dataclass
class RunSettings:
    """Settings of a run that are not searched over, from the config's `data.trainer` mapping."""

    validation_period: pytorch.TrainUnit = dataclasses.field(default_factory=lambda: pytorch.Epoch(1))
    checkpoint_period: pytorch.TrainUnit = dataclasses.field(default_factory=lambda: pytorch.Epoch(1))
    reporting_period: pytorch.TrainUnit = dataclasses.field(default_factory=lambda: pytorch.Batch(50))
    coco_evaluator: str = "pycocotools"
    warm_start: str | None = None
    num_workers: int = 4

    KEYS = ("validation_period", "checkpoint_period", "reporting_period", "coco_evaluator", "warm_start")

    @classmethod
    def from_data_config(cls, data_config: Mapping) -> "RunSettings":
        trainer = data_config.get("trainer") or {}
        if not isinstance(trainer, Mapping):
            raise ValueError(f"data.trainer must be a mapping, got {trainer!r}")
        unknown = sorted(set(trainer) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in data.trainer; known keys: {list(cls.KEYS)}")
        values: dict[str, Any] = {}
        for key in ("validation_period", "checkpoint_period", "reporting_period"):
            if key in trainer:
                values[key] = _period(trainer[key], key)
        if "coco_evaluator" in trainer:
            values["coco_evaluator"] = str(trainer["coco_evaluator"])
        if trainer.get("warm_start") is not None:
            values["warm_start"] = str(trainer["warm_start"])
        num_workers = data_config.get("num_workers", 4)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        values["num_workers"] = num_workers
        return cls(**values)

    def resolve_warm_start(self) -> str:
        """A local path to the warm-start checkpoint; an http(s) URL is downloaded once to the torch hub cache."""
        assert self.warm_start is not None
        if self.warm_start.startswith(("http://", "https://")):
            import torch.hub

            target = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(self.warm_start))
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                torch.hub.download_url_to_file(self.warm_start, target, progress=True)
            return target
        if not os.path.isfile(self.warm_start):
            raise FileNotFoundError(f"data.trainer.warm_start: no checkpoint file at {self.warm_start!r}")
        return self.warm_start

    @staticmethod
    def max_length(exp_conf: Mapping, settings: OptimizationSettings, max_batches: int | None) -> pytorch.TrainUnit:
        """The training length: an explicit batch count, else the searcher's `max_time` in its
        `time_metric` (adaptive searches), else `epochs` from the hyperparameters."""
        if max_batches is not None:
            return pytorch.Batch(max_batches)
        searcher = exp_conf.get("searcher", {})
        if searcher.get("time_metric") in PERIOD_UNITS and searcher.get("max_time"):
            return PERIOD_UNITS[searcher["time_metric"]](int(searcher["max_time"]))
        return pytorch.Epoch(settings.epochs)


def split_data_config(data_config: Mapping) -> tuple[dict, RunSettings]:
    """The `data:` section without `trainer` (what `data.build_dataset` reads), and the run settings."""
    dataset_config = {key: value for key, value in data_config.items() if key != "trainer"}
    return dataset_config, RunSettings.from_data_config(data_config)


def _fixed_value(name: str, value: Any) -> Any:
    if isinstance(value, Mapping) and "type" in value:
        if value["type"] == "const":
            return value["val"]
        raise ValueError(
            f"hyperparameter {name!r} is a search space (type {value['type']}); a local run needs fixed "
            "values: submit the config to a cluster, or fix it with --overrides"
        )
    if isinstance(value, Mapping):
        return {key: _fixed_value(f"{name}.{key}", inner) for key, inner in value.items()}
    return value


def fixed_hyperparameters(hyperparameters: Mapping) -> dict:
    """Hyperparameters as plain values (Determined's `{type: const, val: x}` form unwrapped)."""
    return {name: _fixed_value(name, value) for name, value in hyperparameters.items()}


def load_experiment_config(path: str, overrides_json: str | None = None) -> tuple[dict, dict]:
    """The experiment config and its fixed hyperparameters, with optional JSON overrides applied."""
    with open(path) as f:
        exp_conf = yaml.safe_load(f)
    if not isinstance(exp_conf, dict):
        raise ValueError(f"{path}: an experiment config must be a YAML mapping")
    hparams = fixed_hyperparameters(exp_conf.get("hyperparameters", {}))
    if overrides_json:
        overrides = json.loads(overrides_json)
        if not isinstance(overrides, dict):
            raise ValueError("--overrides must be a JSON object of hyperparameters")
        hparams.update(overrides)
    return exp_conf, hparams
