"""The package's dependency rules: it never imports the repository's root entry points, and inference runs
without Determined."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, "deformable_detr")
ROOT_ENTRY_POINTS = {"model", "data", "model_def", "predict", "train_local"}


def package_modules() -> list[str]:
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(PACKAGE)
        for name in names
        if name.endswith(".py")
    )


def imported_top_level_names(path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", package_modules(), ids=lambda path: os.path.relpath(path, REPO_ROOT))
def test_package_modules_do_not_import_the_root_entry_points(path: str) -> None:
    assert not imported_top_level_names(path) & ROOT_ENTRY_POINTS


def test_inference_and_predict_do_not_import_determined() -> None:
    probe = (
        "import sys; import predict, deformable_detr.inference.loading, deformable_detr.inference.results, "
        "deformable_detr.inference.visualize; print(sorted(m for m in sys.modules if m.split('.')[0] == 'determined'))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
