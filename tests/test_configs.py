"""Every config at the repository root is read completely by the code: no dead hyperparameters, every
hyperparameter and data setting valid (Determined's schema validation is in test_expconf.py)."""

import dataclasses
import glob
import os

import pytest
import yaml

from conftest import REPO_ROOT
from deformable_detr.config.experiment import (
    MODEL_KEYS,
    TRIAL_KEYS,
    ExperimentSettings,
    fixed_hyperparameters,
    parse_hyperparameters,
)
from deformable_detr.config.model import ModelSettings
from deformable_detr.config.optim import OptimizationSettings
from deformable_detr.config.run import Period, RunSettings

CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "*.yaml")))


def load(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def sample_value(spec):
    """A value inside a search space (the lower end), or the constant itself."""
    if not isinstance(spec, dict) or "type" not in spec:
        return spec
    kind = spec["type"]
    if kind == "const":
        return spec["val"]
    if kind == "categorical":
        return spec["vals"][0]
    if kind == "log":
        return spec["base"] ** spec["minval"]
    return spec["minval"]


def test_there_are_the_configs_the_readme_documents():
    names = {os.path.basename(path) for path in CONFIGS}
    assert {"const_fake.yaml", "distributed_gcs.yaml", "distributed_hdd.yaml", "finetune.yaml", "adaptive.yaml",
            "cpu_synthetic.yaml"} <= names


def test_every_hyperparameter_has_one_owner_and_the_trial_keys_are_its_settings_fields():
    assert TRIAL_KEYS == {field.name for field in dataclasses.fields(OptimizationSettings)}
    assert MODEL_KEYS == {field.name for field in dataclasses.fields(ModelSettings)}
    assert not MODEL_KEYS & TRIAL_KEYS


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_hyperparameter_is_read_and_valid(path):
    hyperparameters = load(path)["hyperparameters"]
    dead = sorted(set(hyperparameters) - MODEL_KEYS - TRIAL_KEYS)
    assert not dead, f"{os.path.basename(path)}: hyperparameters no code reads: {dead}"
    values = {name: sample_value(spec) for name, spec in hyperparameters.items()}
    parse_hyperparameters(values)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_whole_config_is_valid(path):
    config = load(path)
    values = {name: sample_value(spec) for name, spec in config["hyperparameters"].items()}
    settings = ExperimentSettings.from_config(config, values)
    assert isinstance(settings.run, RunSettings)
    assert "trainer" not in settings.data_section and settings.data_section["backend"] == settings.data.backend


def test_training_length_comes_from_the_searcher_else_the_epochs():
    hparams, data = {"epochs": 7}, {"data": {"backend": "fake"}}
    assert ExperimentSettings.from_config(data, hparams).length == Period("epochs", 7)
    adaptive = {**data, "searcher": {"name": "adaptive_asha", "time_metric": "batches", "max_time": 300}}
    assert ExperimentSettings.from_config(adaptive, hparams).length == Period("batches", 300)


def test_search_spaces_are_refused_for_a_local_run():
    with pytest.raises(ValueError, match="'lr' is a search space"):
        fixed_hyperparameters(load(os.path.join(REPO_ROOT, "adaptive.yaml"))["hyperparameters"])


def test_unknown_trainer_setting_is_named():
    with pytest.raises(ValueError, match="validation_periods"):
        RunSettings.from_mapping({"validation_periods": {"epochs": 1}})
    with pytest.raises(ValueError, match="batches: N"):
        RunSettings.from_mapping({"validation_period": {"steps": 3}})
    with pytest.raises(ValueError, match="data.trainer.coco_evaluator must be one of"):
        RunSettings.from_mapping({"coco_evaluator": "detectron"})
