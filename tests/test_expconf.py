"""The offline expconf validator: Determined's own schema test cases, the master's searcher rule,
deprecated fields, and every experiment config at the repository root."""

import copy
import glob
import os
import re
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT
from fixtures.expconf_schemas import (  # noqa: F401 (schemas_env is a fixture)
    SCHEMAS_ORIGIN,
    SCHEMAS_ROOT,
    require_schemas_root,
    schema_cases_dir,
    schemas_env,
)

from deformable_detr.tools import expconf

CASES_DIR = schema_cases_dir()
CASE_FILES = sorted(glob.glob(os.path.join(CASES_DIR, "*.yaml"))) if CASES_DIR else []
ROOT_CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "*.yaml")))


def _no_cases_reason() -> str:
    if SCHEMAS_ROOT is None:
        return SCHEMAS_ORIGIN
    return (
        f"no test_cases folder next to the schemas in {SCHEMAS_ROOT} (from {SCHEMAS_ORIGIN}); the download "
        f"cache holds only the schemas: set {expconf.SCHEMAS_DIR_ENV} to the schemas/ folder of a Determined "
        f"{expconf.SCHEMAS_VERSION} source checkout to run Determined's schema test cases"
    )


def _load_cases() -> list[Any]:
    if CASES_DIR is None:
        return [pytest.param(None, id="no-test-cases", marks=pytest.mark.skip(reason=_no_cases_reason()))]
    cases = []
    for path in CASE_FILES:
        with open(path) as f:
            for case in yaml.safe_load(f):
                cases.append(pytest.param(case, id=f"{os.path.basename(path)}::{case['name']}"))
    return cases


@pytest.fixture(scope="module")
def schemas() -> expconf.ExpconfSchemas:
    return expconf.load_schemas(require_schemas_root())


def _same_json(actual: Any, expected: Any, star_matches: bool) -> bool:
    """Compare JSON as the master's test runner does after its Go structs round-trip: a null value
    and a missing key are the same (the schemas' null rule), numbers compare by value, and with
    ``star_matches`` an expected "*" stands for any non-null (runtime-chosen) value."""
    if star_matches and expected == "*":
        return actual is not None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return False
        keys = {k for k, v in expected.items() if v is not None} | {k for k, v in actual.items() if v is not None}
        return all(_same_json(actual.get(k), expected.get(k), star_matches) for k in keys)
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_same_json(a, e, star_matches) for a, e in zip(actual, expected))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    return actual == expected


def _unmatched(patterns: list[str], errors: list[str]) -> list[str]:
    # Go's regexp.MatchString: an unanchored search in any rendered error.
    return [p for p in patterns if not any(re.search(p, e) for e in errors)]


@pytest.mark.parametrize("case", _load_cases())
def test_determined_schema_case(schemas: expconf.ExpconfSchemas, case: dict[str, Any]) -> None:
    instance = case.get("case")
    checked = False
    for url in case.get("sane_as") or []:
        assert schemas.sanity_errors(instance, url) == [], f"sanity against {url}"
        checked = True
    for url in case.get("complete_as") or []:
        assert schemas.completeness_errors(instance, url) == [], f"completeness against {url}"
        checked = True
    phases = (("sanity_errors", schemas.sanity_errors), ("completeness_errors", schemas.completeness_errors))
    for phase, validate in phases:
        for url, patterns in (case.get(phase) or {}).items():
            errors = validate(instance, url)
            assert errors, f"{phase}: expected errors against {url}, got none"
            assert _unmatched(patterns, errors) == [], f"{phase} against {url}: {errors}"
            checked = True
    if "default_as" in case or "defaulted" in case:
        defaulted = schemas.with_defaults(instance, case["default_as"])
        assert _same_json(defaulted, case["defaulted"], star_matches=True), defaulted
        checked = True
    if "merge_as" in case or "merge_src" in case or "merged" in case:
        url = case["merge_as"]
        assert schemas.sanity_errors(instance, url) == []
        assert schemas.sanity_errors(case["merge_src"], url) == []
        merged = schemas.merge(instance, case["merge_src"], url)
        assert _same_json(merged, case["merged"], star_matches=False), merged
        checked = True
    assert checked, f"case {case['name']!r} has no kind of check this runner knows"


def test_schema_test_cases_are_found(schemas: expconf.ExpconfSchemas) -> None:
    if CASES_DIR is None:
        pytest.skip(_no_cases_reason())
    # Guards against a glob that silently matches nothing and so passes vacuously.
    assert CASE_FILES, f"no *.yaml in {CASES_DIR}"


def test_defaulting_does_not_modify_the_input(schemas: expconf.ExpconfSchemas) -> None:
    config = {"searcher": {"name": "single", "metric": "loss"}, "environment": {"image": "img"}}
    before = copy.deepcopy(config)
    schemas.with_defaults(config)
    schemas.merge(config, expconf.DEFAULT_CLUSTER_CONFIG)
    assert config == before


def _asha(**searcher: Any) -> dict[str, Any]:
    return {
        "name": "asha",
        "entrypoint": "python3 model_def.py",
        "data": {"backend": "fake"},
        "hyperparameters": {"lr": {"type": "log", "base": 10, "minval": -5, "maxval": -3}},
        "searcher": {"name": "adaptive_asha", "metric": "mAP", "smaller_is_better": False, "max_trials": 8, **searcher},
    }


def test_asha_with_only_max_length_is_rejected(schemas: expconf.ExpconfSchemas) -> None:
    errors = expconf.validate_config(_asha(max_length={"epochs": 50}), schemas=schemas)
    assert errors == [
        "<config>.searcher: the `adaptive_asha` searcher requires `max_time` and `time_metric` to be set"
    ]


def test_asha_with_max_time_and_time_metric_is_accepted(schemas: expconf.ExpconfSchemas) -> None:
    assert expconf.validate_config(_asha(max_time=50, time_metric="epochs"), schemas=schemas) == []


def test_asha_with_max_time_but_no_time_metric_is_rejected(schemas: expconf.ExpconfSchemas) -> None:
    assert expconf.validate_config(_asha(max_time=50), schemas=schemas) != []


def test_end_of_life_searcher_is_rejected(schemas: expconf.ExpconfSchemas) -> None:
    config = _asha()
    config["searcher"] = {"name": "adaptive_simple", "metric": "loss", "max_trials": 4, "max_length": {"batches": 10}}
    errors = expconf.validate_config(config, schemas=schemas)
    assert any("'adaptive_simple' searcher has been removed" in e for e in errors), errors


def test_missing_metric_is_a_completeness_error(schemas: expconf.ExpconfSchemas) -> None:
    config = {"entrypoint": "python3 model_def.py", "searcher": {"name": "single"}}
    assert "<config>.searcher: metric is a required property" in expconf.validate_config(config, schemas=schemas)


def test_missing_checkpoint_storage_is_reported_without_cluster_defaults(
    schemas: expconf.ExpconfSchemas,
) -> None:
    config = {"entrypoint": "python3 model_def.py", "searcher": {"name": "single", "metric": "loss"}}
    assert expconf.validate_config(config, schemas=schemas) == []
    errors = expconf.validate_config(config, cluster_defaults={}, schemas=schemas)
    assert errors == ["<config>: checkpoint_storage is a required property"]


def test_sanity_errors_name_the_key(schemas: expconf.ExpconfSchemas) -> None:
    config = {
        "searcher": {"name": "single", "metric": "loss", "max_trials": "many"},
        "resources": {"slots_per_trial": -1},
    }
    errors = expconf.validate_config(config, schemas=schemas)
    assert any(e.startswith("<config>.resources.slots_per_trial:") for e in errors), errors
    assert any(e.startswith("<config>.searcher") for e in errors), errors


def test_non_mapping_config_is_rejected(schemas: expconf.ExpconfSchemas) -> None:
    assert expconf.validate_config(["not", "a", "mapping"], schemas=schemas) == [
        "<config>: an experiment config must be a mapping, not list"
    ]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"searcher": {"name": "single", "metric": "l", "max_length": {"epochs": 1}}}, "searcher.max_length"),
        ({"min_validation_period": {"epochs": 1}}, "min_validation_period"),
        ({"min_checkpoint_period": {"epochs": 1}}, "min_checkpoint_period"),
        ({"scheduling_unit": 10}, "scheduling_unit"),
        ({"optimizations": {"aggregation_frequency": 2}}, "optimizations"),
        ({"records_per_epoch": 1000}, "records_per_epoch"),
        ({"entrypoint": "model_def:DeformableDETRTrial"}, "entrypoint"),
    ],
)
def test_deprecated_field_is_reported(config: dict[str, Any], field: str) -> None:
    found = expconf.deprecated_fields(config)
    assert len(found) == 1 and found[0].startswith(field), found


def test_current_fields_are_not_reported_deprecated() -> None:
    config = _asha(max_time=50, time_metric="epochs")
    config["entrypoint"] = "python3 -m determined.launch.torch_distributed python3 model_def.py"
    assert expconf.deprecated_fields(config) == []


def test_missing_schema_folder_is_a_clear_error(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(expconf.SCHEMAS_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(expconf.SchemasNotFoundError, match="nowhere"):
        expconf.find_schemas_dir()


def test_command_line_reports_errors_and_exit_status(
    schemas_env: None, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(_asha(max_time=50, time_metric="epochs")))
    bad.write_text(yaml.safe_dump(_asha(max_length={"epochs": 50})))
    assert expconf.main([str(good)]) == 0
    assert expconf.main([str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml: error: <config>.searcher: the `adaptive_asha` searcher requires" in err
    assert "bad.yaml: deprecated: searcher.max_length" in err


@pytest.mark.parametrize("path", ROOT_CONFIGS, ids=[os.path.basename(p) for p in ROOT_CONFIGS])
def test_repository_config_is_valid_and_current(schemas: expconf.ExpconfSchemas, path: str) -> None:
    with open(path) as f:
        config = yaml.safe_load(f)
    assert expconf.validate_config(config, schemas=schemas) == []
    assert expconf.deprecated_fields(config) == []


def test_command_line_without_schemas_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(expconf.SCHEMAS_DIR_ENV, str(tmp_path / "nowhere"))
    expconf.load_schemas.cache_clear()
    try:
        assert expconf.main([str(tmp_path / "any.yaml")]) == 2
    finally:
        expconf.load_schemas.cache_clear()
    assert "expconf schemas not found" in capsys.readouterr().err
