"""`make gpu-check` (benchmarks/gpu_check.py): its --smoke run on the CPU goes through every step, and a kernel
that is off the reference fails the report."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
import gpu_check  # noqa: E402

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "gpu_check.py")


@pytest.mark.slow
def test_smoke_run_prints_one_table_with_every_check() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DDETR_")}
    result = subprocess.run([sys.executable, SCRIPT, "--smoke"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table[:2] == ["| check | case | measurement | status |", "|---|---|---|---|"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("kernel vs reference", "fp32, decoder (300 queries)"),
        ("kernel vs reference", "bf16, decoder (300 queries)"),
        ("kernel vs reference", "fp16, decoder (300 queries)"),
        ("CUDA tests", "pytest -m gpu"),
        ("training", "fp32"),
        ("training", "bf16 autocast"),
    ]
    assert all(row[3] == "ok" for row in rows), table
    assert re.search(r"\d+ skipped", rows[3][2]), rows[3]
    assert re.match(r"[\d.]+ images/s, \d+ ms/step over 1 steps, peak memory n/a \(CPU\)", rows[4][2]), rows[4]
    assert rows[5][2].endswith("x fp32"), rows[5]
    assert "attention kernel from" in result.stdout and "CPU, --smoke" in result.stdout


def test_a_kernel_off_the_reference_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = gpu_check.ops.ms_deform_attn_reference

    def two_percent_off(value, shapes, starts, locations, weights):
        exact = reference(value.double(), shapes, starts, locations.double(), weights.double())
        return (exact * 1.02).to(value.dtype)

    monkeypatch.setattr(gpu_check.ops, "ms_deform_attn", two_percent_off)
    rows = gpu_check.check_kernel(gpu_check.SMOKE)
    status = {row.case.split(",")[0]: row.ok for row in rows}
    # 2e-2 relative: above the float32 and float16 tolerances, within bfloat16's.
    assert status == {"fp32": False, "bf16": True, "fp16": False}
    assert "out 2.0e-02, d value 2.0e-02, d loc 2.0e-02, d weights 2.0e-02" in rows[0].measurement


def test_nan_fails_whatever_its_position(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = gpu_check.ops.ms_deform_attn_reference

    def nan_in_the_last_weight_gradient(value, shapes, starts, locations, weights):
        if weights.requires_grad:  # only d weights, the last error, is NaN
            weights.register_hook(lambda grad: grad * float("nan"))
        return reference(value, shapes, starts, locations, weights)

    monkeypatch.setattr(gpu_check.ops, "ms_deform_attn", nan_in_the_last_weight_gradient)
    rows = gpu_check.check_kernel(gpu_check.SMOKE)
    assert "d weights nan" in rows[0].measurement and not rows[0].ok


def test_gpu_run_without_a_gpu_says_so() -> None:
    if gpu_check.torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    result = subprocess.run([sys.executable, SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no GPU visible (run with --smoke" in result.stderr
