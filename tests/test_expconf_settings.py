"""The config check also parses this package's settings: configs Determined's schemas accept but the trial
would refuse fail the command with every problem named, search spaces value by value."""

import glob
import os
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT
from fixtures.expconf_schemas import schemas_env  # noqa: F401 (a fixture)

from deformable_detr.tools import expconf

VALID = {
    "name": "check",
    "entrypoint": "python3 -m determined.launch.torch_distributed python3 model_def.py check.yaml",
    "searcher": {"name": "single", "metric": "mAP", "smaller_is_better": False},
    "data": {"backend": "local", "data_dir": "/data/coco", "trainer": {"validation_period": {"epochs": 1}}},
    "hyperparameters": {"lr": 2e-4, "global_batch_size": 32, "backbone": "resnet50"},
}


def _with(**changes: Any) -> dict[str, Any]:
    config = yaml.safe_load(yaml.safe_dump(VALID))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    return config


def _check(tmp_path: Any, capsys: pytest.CaptureFixture[str], config: dict[str, Any]) -> tuple[int, list[str]]:
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(config))
    status = expconf.main([str(path)])
    captured = capsys.readouterr()
    return status, [line for line in (captured.out + captured.err).splitlines() if line]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hyperparameters__lr": "abc"}, "error: hyperparameter 'lr' must be a number, got 'abc'"),
        ({"hyperparameters__global_batch_size": 0},
         "error: hyperparameter 'global_batch_size' must be a positive integer, got 0"),
        ({"data__backend": "locall"}, "error: data.backend must be one of"),
    ],
    ids=["lr-not-a-number", "batch-size-0", "backend-typo"],
)
def test_config_the_schemas_accept_but_the_trial_refuses_fails(
    schemas_env: None, tmp_path: Any, capsys: pytest.CaptureFixture[str], change: dict, message: str
) -> None:
    config = _with(**change)
    assert expconf.validate_config(config) == []  # Determined's schemas alone call it valid
    status, lines = _check(tmp_path, capsys, config)
    assert status == 1
    assert lines == [f"{tmp_path / 'check.yaml'}: {message}"] or (
        len(lines) == 1 and lines[0].startswith(f"{tmp_path / 'check.yaml'}: {message}")), lines


def test_valid_config_is_still_valid(schemas_env: None, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(tmp_path, capsys, _with()) == (0, [f"{tmp_path / 'check.yaml'}: valid"])


def test_every_problem_is_reported_not_only_the_first(
    schemas_env: None, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _with(hyperparameters__lr="abc", hyperparameters__global_batch_size=0, hyperparameters__colour="red",
                   data__backend="locall", data__num_workers=-1, data__trainer={"validation_period": {"epoch": 1}})
    status, lines = _check(tmp_path, capsys, config)
    assert status == 1
    text = "\n".join(lines)
    for expected in ("unknown key(s) 'colour'", "hyperparameter 'lr' must be a number",
                     "hyperparameter 'global_batch_size' must be a positive integer", "data.backend must be one of",
                     "data.num_workers must be >= 0", "data.trainer.validation_period must be"):
        assert expected in text, text
    assert len(lines) == 6, text  # nothing that follows only from another error


def test_search_spaces_are_checked_value_by_value() -> None:
    config = _with(hyperparameters__nheads={"type": "categorical", "vals": [8, 7]},
                   hyperparameters__dropout={"type": "double", "minval": 0.0, "maxval": 1.5},
                   hyperparameters__lr={"type": "log", "base": 10, "minval": -5, "maxval": -3})
    errors = expconf.settings_errors(config)
    assert errors == [
        "hyperparameter 'hidden_dim' must be divisible by nheads (7) (categorical value 7 of nheads)",
        "hyperparameter 'dropout' must be in [0, 1) (double maxval of dropout)",
    ], errors
    samples = dict((where, hparams) for hparams, where in expconf.hyperparameter_samples(
        config["hyperparameters"]))
    assert samples[" (log maxval 10**-3 of lr)"]["lr"] == pytest.approx(1e-3)
    assert samples[""] == {**VALID["hyperparameters"], "nheads": 8, "dropout": 0.0, "lr": 1e-5}


def test_settings_that_depend_on_each_other_are_checked_together() -> None:
    # two_stage needs with_box_refine: fine together, an error alone.
    assert expconf.settings_errors(_with(hyperparameters__two_stage=True, hyperparameters__with_box_refine=True)) == []
    assert expconf.settings_errors(_with(hyperparameters__two_stage=True)) == [
        "hyperparameter 'two_stage' requires 'with_box_refine': true"]


CONFIGS = sorted(os.path.relpath(path, REPO_ROOT) for pattern in ("*.yaml", "examples/*.yaml")
                 for path in glob.glob(os.path.join(REPO_ROOT, pattern)))


@pytest.mark.parametrize("name", CONFIGS)
def test_repository_configs_pass_the_settings_check(name: str) -> None:
    with open(os.path.join(REPO_ROOT, name)) as f:
        assert expconf.settings_errors(yaml.safe_load(f)) == []
