"""An experiment's settings, parsed once: `ExperimentSettings` holds the model, optimisation, data and run
settings of one experiment config and its (fixed) hyperparameters.

Every hyperparameter belongs to `ModelSettings` or `OptimizationSettings` (the trial's keys are the latter's
fields), or is one of the authors' segmentation keys; any other key is an error with a did-you-mean hint.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from deformable_detr.config.data import TRAINER_KEY, DataSettings
from deformable_detr.config.model import SEGMENTATION_KEYS, ModelSettings
from deformable_detr.config.optim import OptimizationSettings
from deformable_detr.config.parsing import HYPERPARAMETERS, coerce, field_names, parse_settings, reject_unknown
from deformable_detr.config.run import PERIOD_UNITS, Period, RunSettings

MODEL_KEYS = field_names(ModelSettings)
TRIAL_KEYS = field_names(OptimizationSettings)
HYPERPARAMETER_KEYS = MODEL_KEYS | TRIAL_KEYS | SEGMENTATION_KEYS


def parse_hyperparameters(hparams: Mapping[str, Any]) -> tuple[ModelSettings, OptimizationSettings]:
    """The model's and the trial's settings from an experiment's hyperparameters mapping.

    Raises ValueError naming any unknown, mistyped, out-of-range or contradictory key; `masks` (the authors'
    segmentation switch) must be false.
    """
    if not isinstance(hparams, Mapping):
        raise ValueError(f"hyperparameters must be a mapping, got {type(hparams).__name__}")
    reject_unknown(HYPERPARAMETERS, hparams, HYPERPARAMETER_KEYS)
    if hparams.get("masks", False) is not False:
        raise ValueError("hyperparameter 'masks': segmentation is not supported; set it to false or remove it")
    return (
        parse_settings(ModelSettings, HYPERPARAMETERS, hparams),
        parse_settings(OptimizationSettings, HYPERPARAMETERS, hparams),
    )


@dataclass(frozen=True)
class ExperimentSettings:
    """All settings of one experiment.

    hparams: the hyperparameters as given (checkpoints keep them, to rebuild the model).
    data_section: the `data:` section without `trainer` (checkpoints keep it; `build_dataset` reads it).
    experiment_seed: `reproducibility.experiment_seed` (0 when absent).
    length: the training length: the searcher's `max_time` in its `time_metric` (adaptive searches), else
        `epochs` from the hyperparameters.
    """

    model: ModelSettings
    optimization: OptimizationSettings
    data: DataSettings
    run: RunSettings
    hparams: dict[str, Any]
    data_section: dict[str, Any]
    experiment_seed: int
    length: Period

    @classmethod
    def from_config(cls, exp_conf: Mapping[str, Any], hparams: Mapping[str, Any]) -> "ExperimentSettings":
        """From an experiment config and its hyperparameters (fixed values: on a cluster the master's sample,
        locally `fixed_hyperparameters`)."""
        model, optimization = parse_hyperparameters(hparams)
        data_section = exp_conf.get("data") or {}
        if not isinstance(data_section, Mapping):
            raise ValueError(f"data: the section must be a mapping, got {type(data_section).__name__}")
        reproducibility = exp_conf.get("reproducibility") or {}
        seed = coerce("reproducibility", "experiment_seed", int, reproducibility.get("experiment_seed", 0))
        return cls(
            model=model,
            optimization=optimization,
            data=DataSettings.from_mapping(data_section).for_model(model.num_classes),
            run=RunSettings.from_mapping(data_section.get(TRAINER_KEY)),
            hparams=dict(hparams),
            data_section={key: value for key, value in data_section.items() if key != TRAINER_KEY},
            experiment_seed=seed,
            length=_training_length(exp_conf.get("searcher") or {}, optimization),
        )


def _training_length(searcher: Mapping[str, Any], optimization: OptimizationSettings) -> Period:
    if searcher.get("time_metric") in PERIOD_UNITS and searcher.get("max_time"):
        return Period(searcher["time_metric"], int(searcher["max_time"]))
    return Period("epochs", optimization.epochs)


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


def fixed_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as plain values (Determined's `{type: const, val: x}` form unwrapped)."""
    return {name: _fixed_value(name, value) for name, value in hyperparameters.items()}


def load_experiment_config(path: str, overrides_json: str | None = None) -> tuple[dict, dict]:
    """The experiment config at `path` and its fixed hyperparameters, with optional JSON overrides applied."""
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
