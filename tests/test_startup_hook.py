"""The startup hook's check (scripts/check_image.py): what it finds in this environment, and how a wrong
image fails: within seconds, with a message that says what is wrong and how to fix it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import check_image  # noqa: E402

CHECK = os.path.join(REPO_ROOT, "scripts", "check_image.py")
HOOK = os.path.join(REPO_ROOT, "startup-hook.sh")
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens where no GPU is visible")


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without the knobs the check and the hook read."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DDETR_", "DET_"))}
    env.update(overrides)
    return env


def run_check(*args: str, python: str = sys.executable, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, CHECK, *args], cwd=REPO_ROOT, env=clean_env(**env), capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh virtual environment with no packages: an image that is not this package's."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return str(venv / "bin" / "python")


def test_python_torch_and_pins_pass_in_this_environment() -> None:
    result = run_check("--gpu", "skip")
    lines = result.stdout.splitlines()
    assert f"check_image: [ok]   Python {'.'.join(map(str, sys.version_info[:3]))} (>= 3.11)" in lines
    assert any(line.startswith("check_image: [ok]   ") and "pinned packages of requirements.txt" in line
               for line in lines), result.stdout
    assert any(line.startswith(f"check_image: [ok]   torch {torch.__version__}, CUDA 13.0 build") for line in lines)


@needs_no_gpu
def test_no_gpu_visible_is_reported_when_gpus_are_required() -> None:
    start = time.perf_counter()
    result = run_check("--gpu", "require")
    assert time.perf_counter() - start < 30
    assert result.returncode == 1
    assert "check_image: [FAIL] no GPU visible: GPUs are required (--gpu require), but torch sees none" in result.stdout


@needs_no_gpu
def test_gpus_assigned_by_determined_must_be_visible(tmp_path: Path) -> None:
    info = tmp_path / "resources.json"
    info.write_text(json.dumps({"gpu_uuids": ["GPU-aaaa", "GPU-bbbb"]}))
    result = run_check("--resources-info", str(info))
    assert result.returncode == 1
    assert "[FAIL] no GPU visible: Determined assigned 2 GPU(s) to this container (GPU-aaaa, GPU-bbbb)" in result.stdout
    assert "NVIDIA driver (>= 580)" in result.stdout


def test_a_container_without_gpus_skips_the_gpu_checks(tmp_path: Path) -> None:
    info = tmp_path / "resources.json"
    info.write_text(json.dumps({"gpu_uuids": []}))
    result = run_check("--resources-info", str(info))
    assert "[ok]   no GPUs assigned to this container" in result.stdout
    assert "no GPU visible" not in result.stdout


def test_slurm_cuda_slots_require_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DET_SLOT_TYPE", "cuda")
    monkeypatch.setenv("DET_SLOT_IDS", "[0,1,2,3]")
    assert check_image.demanded_gpus("auto", tmp_path / "absent.json") == (
        4, "Determined runs this container on 4 CUDA slot(s)")
    monkeypatch.setenv("DET_SLOT_TYPE", "cpu")
    assert check_image.demanded_gpus("auto", tmp_path / "absent.json") is None
    assert check_image.demanded_gpus("skip", tmp_path / "absent.json") is None


def test_python_310_fails_fast_without_importing_torch() -> None:
    start = time.perf_counter()
    result = run_check("--python-version", "3.10.12")
    assert time.perf_counter() - start < 10
    assert result.returncode == 1
    assert "[FAIL] Python 3.10.12 is too old" in result.stdout
    assert "need Python >= 3.11" in result.stdout
    assert "`make image`" in result.stdout and "environment.image" in result.stdout
    assert result.stdout.count("check_image: [") == 1, "nothing else is checked on a Python that is too old"


def test_an_environment_without_torch_fails_fast_with_the_fix(bare_python: str) -> None:
    start = time.perf_counter()
    result = run_check(python=bare_python)
    assert time.perf_counter() - start < 10
    assert result.returncode == 1
    assert "[FAIL] this environment does not match requirements.txt (not installed: torch, torchvision" in result.stdout
    assert "[FAIL] torch is not installed in this Python" in result.stdout
    assert "`make image`" in result.stdout
    assert f"{bare_python} cannot run the trial: 2 problem(s) above" in result.stderr


def test_pins_come_from_requirements_txt(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch==2.13.0  # older\nnumpy==2.4.6\n")
    result = run_check("--gpu", "skip", "--requirements", str(requirements))
    assert result.returncode == 1
    installed = torch.__version__.split("+")[0]
    assert f"other versions: torch {installed} (pinned 2.13.0)" in result.stdout
    assert f"[FAIL] torch {torch.__version__} is installed, requirements.txt pins 2.13.0" in result.stdout


def test_requirements_file_is_read_strictly(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\n-r other.txt\nPyYAML==6.0.3\n\ntorch>=2.0\n")
    with pytest.raises(ValueError, match=r"requirements.txt:5: expected an exact pin `name==version`, got 'torch>="):
        check_image.read_pins(requirements)
    requirements.write_text("# comment\n-r other.txt\nPyYAML==6.0.3\nmoto[server]==5.2.5  # S3 server\n")
    assert check_image.read_pins(requirements) == {"pyyaml": "6.0.3", "moto": "5.2.5"}


def test_kernel_sources_digest_follows_every_source_file(tmp_path: Path) -> None:
    ops_dir = tmp_path / "ops"
    (ops_dir / "csrc" / "cuda").mkdir(parents=True)
    (ops_dir / "csrc" / "a.cpp").write_text("int a;")
    (ops_dir / "csrc" / "cuda" / "b.cu").write_text("int b;")
    before = check_image.sources_digest(ops_dir)
    (ops_dir / "csrc" / "cuda" / "b.cu").write_text("int b2;")
    assert check_image.sources_digest(ops_dir) != before
    (ops_dir / "csrc" / "cuda" / "b.cu").write_text("int b;")
    assert check_image.sources_digest(ops_dir) == before
    (ops_dir / "csrc" / "c.h").write_text("")
    assert check_image.sources_digest(ops_dir) != before


def test_hook_stops_the_container_when_sourced_by_the_entrypoint(bare_python: str) -> None:
    # Determined's entrypoint sources the hook under `set -e` and runs the trial afterwards.
    script = f"set -e; source {HOOK}; echo TRIAL STARTS"
    result = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env=clean_env(DET_PYTHON_EXECUTABLE=bare_python))
    assert result.returncode == 1
    assert "TRIAL STARTS" not in result.stdout
    assert "[FAIL] torch is not installed" in result.stdout


@needs_no_gpu
def test_hook_reports_no_gpu_visible_when_gpus_are_demanded() -> None:
    result = subprocess.run(["bash", HOOK], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env=clean_env(DET_PYTHON_EXECUTABLE=sys.executable, DDETR_CHECK_GPU="require"))
    assert result.returncode == 1
    assert "[FAIL] no GPU visible" in result.stdout


def test_unknown_gpu_mode_is_rejected() -> None:
    result = run_check(DDETR_CHECK_GPU="sometimes")
    assert result.returncode == 2
    assert "DDETR_CHECK_GPU='sometimes': expected one of auto, require, skip" in result.stderr
