"""A clone with nothing beside it has every file the suite reads: no test depends on a folder outside it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from fixtures.expconf_schemas import SCHEMAS_ROOT

# Prints OK after reading every shipped reference file through the suite's own lookups.
PROBE = """
import json, sys
sys.path[:0] = ["tests"]
import torch
from fixtures import model_reference as ref
for name in ref.REFERENCE_FILES:
    path = ref.reference_path(name)
    if name.endswith(".pt"):
        torch.load(path, weights_only=True)
    elif name.endswith(".json"):
        json.load(open(path))
for variant in ref.VARIANTS:
    assert ref.official_keys(variant) and ref.official_aliases(variant)
assert len(ref.msda_cases()) >= 2
print("OK", ref.REFERENCE_DIR)
"""


def repository_files() -> list[str]:
    """Tracked files and untracked ones git does not ignore: what a clone of the committed tree holds."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [path for path in listed if os.path.isfile(os.path.join(REPO_ROOT, path))]


def collected_test_ids(root: str, env: dict[str, str]) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


@pytest.fixture(scope="module")
def lone_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository in a folder that holds nothing else (no `shared` beside it)."""
    if shutil.which("git") is None or not os.path.isdir(os.path.join(REPO_ROOT, ".git")):
        pytest.skip("needs a git checkout to know which files a clone holds")
    clone = tmp_path_factory.mktemp("alone") / "repository"
    for path in repository_files():
        target = clone / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(REPO_ROOT, path), target)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["repository"]
    return clone


def test_reference_data_lookups_find_everything_inside_a_lone_clone(lone_clone: Path) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=lone_clone, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"OK {lone_clone / 'tests' / 'data' / 'reference'}"


@pytest.mark.slow
def test_a_lone_clone_collects_the_same_tests(lone_clone: Path) -> None:
    """Parametrised cases built from reference data are collected there too. Both runs are given the same
    schema folder: the config-schema cases come from Determined's schemas, which a clone downloads."""
    env = dict(os.environ)
    if SCHEMAS_ROOT is not None:
        env["DET_SCHEMAS_DIR"] = SCHEMAS_ROOT
    here = collected_test_ids(REPO_ROOT, env)
    there = collected_test_ids(str(lone_clone), env)
    assert len(here) > 400
    assert sorted(there) == sorted(here)
