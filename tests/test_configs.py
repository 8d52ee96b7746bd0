"""Every config at the repository root is read completely by the code: no dead hyperparameters, every
hyperparameter and data setting valid (Determined's schema validation is in test_expconf.py)."""

import dataclasses
import glob
import os

import pytest
import yaml

from conftest import REPO_ROOT
from deformable_detr.config.data import parse_data_config
from deformable_detr.config.model import TRIAL_KEYS, ModelConfig
from deformable_detr.training.optim import TRIAL_HPARAM_KEYS, OptimizationSettings
from deformable_detr.config.run import RunSettings, fixed_hyperparameters, split_data_config

CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "*.yaml")))
MODEL_KEYS = {field.name for field in dataclasses.fields(ModelConfig)}


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


def test_the_model_ignores_exactly_the_keys_the_trial_reads():
    assert TRIAL_KEYS == TRIAL_HPARAM_KEYS - MODEL_KEYS


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_hyperparameter_is_read_and_valid(path):
    hyperparameters = load(path)["hyperparameters"]
    dead = sorted(set(hyperparameters) - MODEL_KEYS - TRIAL_HPARAM_KEYS)
    assert not dead, f"{os.path.basename(path)}: hyperparameters no code reads: {dead}"
    values = {name: sample_value(spec) for name, spec in hyperparameters.items()}
    ModelConfig.from_hparams(values)
    OptimizationSettings.from_hparams(values)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_data_section_is_valid(path):
    dataset_config, run = split_data_config(load(path)["data"])
    parse_data_config(dataset_config)
    assert isinstance(run, RunSettings)


def test_search_spaces_are_refused_for_a_local_run():
    with pytest.raises(ValueError, match="'lr' is a search space"):
        fixed_hyperparameters(load(os.path.join(REPO_ROOT, "adaptive.yaml"))["hyperparameters"])


def test_unknown_trainer_setting_is_named():
    with pytest.raises(ValueError, match="validation_periods"):
        RunSettings.from_data_config({"trainer": {"validation_periods": {"epochs": 1}}})
    with pytest.raises(ValueError, match="batches: N"):
        RunSettings.from_data_config({"trainer": {"validation_period": {"steps": 3}}})
