"""Checks, in seconds, that this Python environment can run the trial: what the startup hook runs.

    python3 scripts/check_image.py              # in a container: GPUs required when Determined assigned some
    python3 scripts/check_image.py --gpu skip   # only the software (e.g. while building the image)

Checks, in order: Python >= 3.11; every `name==version` pin of requirements.txt installed at that version;
torch built for CUDA 13.0; the compiled deformable-attention kernel (`ms_deform_attn_ext`, installed by
`pip install ./ops`) importable, with its CUDA kernel, compiled from this checkout's ops/csrc; and, when the
container runs on GPUs, that torch sees them and the kernel runs on them. Stdlib only until torch is imported,
so that a wrong image fails with a message instead of an ImportError. Exit status 1 when something is off:
every failure says what is wrong and how to fix it.

GPUs are required with `--gpu require`, not checked with `--gpu skip`, and with `--gpu auto` (the default, or
DDETR_CHECK_GPU) when Determined assigned GPUs to the container: its resources info (written by the trial's
entrypoint from nvidia-smi before the startup hook runs) lists their UUIDs, or, under Slurm/PBS, DET_SLOT_TYPE
is "cuda".
"""

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIN_PYTHON = (3, 11)
CUDA_VERSION = "13.0"  # torch's CUDA build; the Dockerfile's base image is the same toolkit
MIN_DRIVER = 580  # CUDA 13.x needs an R580 driver or newer
EXTENSION = "ms_deform_attn_ext"
OP = "deformable_detr_ops::ms_deform_attn"
SOURCES_SUFFIX = ".sources.sha256"  # next to the installed extension: digest of the sources it was built from
RESOURCES_INFO = "/run/determined/info/resources.json"
GPU_MODES = ("auto", "require", "skip")
FIX_IMAGE = (
    "Build the image this package describes (`make image`, then push it) and name it in the experiment "
    "config's environment.image (docs/cluster.md)"
)


@dataclass
class Report:
    """Check results, printed as they come so that a slow step shows where it is."""

    failures: list[str] = field(default_factory=list)

    def ok(self, message: str) -> None:
        print(f"check_image: [ok]   {message}", flush=True)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"check_image: [FAIL] {message}", flush=True)


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file, by lower-case name (comments, blank lines, `-r` includes
    and extras such as `[server]` skipped)."""
    pins = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[A-Za-z0-9,._ -]+\])?\s*==\s*([A-Za-z0-9.+!_-]+)", line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected an exact pin `name==version`, got {raw.strip()!r}")
        pins[match.group(1).lower()] = match.group(2)
    return pins


def sources_digest(ops_dir: Path) -> str:
    """sha256 over the kernel's sources (ops/csrc: paths and contents)."""
    digest = hashlib.sha256()
    csrc = ops_dir / "csrc"
    files = sorted(path for path in csrc.rglob("*") if path.is_file() and "__pycache__" not in path.parts)
    if not files:
        raise FileNotFoundError(f"no kernel sources under {csrc}")
    for path in files:
        digest.update(path.relative_to(csrc).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check_python(report: Report, version: tuple[int, ...]) -> bool:
    shown = ".".join(str(part) for part in version)
    if tuple(version[:2]) >= MIN_PYTHON:
        report.ok(f"Python {shown} (>= {MIN_PYTHON[0]}.{MIN_PYTHON[1]})")
        return True
    report.fail(
        f"Python {shown} is too old: the pinned requirements (numpy 2.4, scipy 1.17, torch 2.14) need Python >= "
        f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}. This is probably Determined's default image, which no startup-hook "
        f"install can fix. {FIX_IMAGE}."
    )
    return False


def check_pins(report: Report, pins: dict[str, str], requirements: Path) -> None:
    missing, wrong = [], []
    for name, pinned in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        if installed.split("+", 1)[0] != pinned:  # a local tag (+cu130) is part of the build, not the version
            wrong.append(f"{name} {installed} (pinned {pinned})")
    if not missing and not wrong:
        report.ok(f"{len(pins)} pinned packages of {requirements.name} installed at their versions")
        return
    problems = ([f"not installed: {', '.join(missing)}"] if missing else []) + (
        [f"other versions: {', '.join(wrong)}"] if wrong else []
    )
    report.fail(
        f"this environment does not match {requirements.name} ({'; '.join(problems)}). The image was built "
        f"from another requirements.txt, or is not this package's image. {FIX_IMAGE}."
    )


def check_torch(report: Report, pinned: str | None):
    """Imports torch; returns the module, or None when it is missing or the wrong build."""
    if importlib.util.find_spec("torch") is None:
        report.fail(f"torch is not installed in this Python ({sys.executable}). {FIX_IMAGE}.")
        return None
    start = time.perf_counter()
    import torch

    seconds = time.perf_counter() - start
    version = torch.__version__.split("+", 1)[0]
    if pinned is not None and version != pinned:
        report.fail(f"torch {torch.__version__} is installed, requirements.txt pins {pinned}. {FIX_IMAGE}.")
        return None
    if torch.version.cuda != CUDA_VERSION:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        report.fail(
            f"torch {torch.__version__} is a {build} build; this package needs the CUDA {CUDA_VERSION} build "
            f"(the default torch wheel on PyPI for Linux). {FIX_IMAGE}."
        )
        return None
    report.ok(f"torch {torch.__version__}, CUDA {torch.version.cuda} build (imported in {seconds:.1f} s)")
    return torch


def check_kernel(report: Report, torch) -> bool:
    """The installed extension: importable, with its CUDA kernel, built from this checkout's sources."""
    spec = importlib.util.find_spec(EXTENSION)
    if spec is None or spec.origin is None:
        report.fail(
            f"the compiled attention kernel ({EXTENSION}) is not installed: every worker would compile it when "
            f"it starts (minutes, and only where nvcc exists). {FIX_IMAGE}; or opt into installing at start "
            "with DDETR_INSTALL_ON_START=1."
        )
        return False
    try:
        __import__(EXTENSION)
    except ImportError as error:
        report.fail(
            f"{EXTENSION} at {spec.origin} does not load ({error}): it was compiled against another torch. "
            f"{FIX_IMAGE}."
        )
        return False
    if not torch._C._dispatch_has_kernel_for_dispatch_key(OP, "CUDA"):
        report.fail(
            f"{EXTENSION} at {spec.origin} has no CUDA kernel (it was compiled where no CUDA toolkit was "
            f"found). {FIX_IMAGE}."
        )
        return False
    stamp = Path(spec.origin).with_name(EXTENSION + SOURCES_SUFFIX)
    try:
        expected = sources_digest(ROOT / "ops")
    except FileNotFoundError as error:
        report.fail(f"{error}: this checkout has no kernel sources to compare the installed kernel with")
        return False
    if not stamp.is_file():
        report.fail(
            f"{EXTENSION} at {spec.origin} has no record of its sources ({stamp.name}), so whether it matches "
            f"this checkout's ops/csrc cannot be told. {FIX_IMAGE}."
        )
        return False
    if stamp.read_text().strip() != expected:
        report.fail(
            f"{EXTENSION} in this image was compiled from other sources than this checkout's ops/csrc: the "
            f"image is older than the code. Rebuild it: {FIX_IMAGE}."
        )
        return False
    report.ok(f"{EXTENSION} loads, with its CUDA kernel, compiled from this checkout's ops/csrc")
    return True


def demanded_gpus(mode: str, resources_info: Path) -> tuple[int, str] | None:
    """(how many GPUs the container must see, why), or None when it runs without GPUs."""
    if mode == "skip":
        return None
    if mode == "require":
        return 1, "GPUs are required (--gpu require)"
    if resources_info.is_file():
        uuids = json.loads(resources_info.read_text()).get("gpu_uuids") or []
        if uuids:
            return len(uuids), f"Determined assigned {len(uuids)} GPU(s) to this container ({', '.join(uuids)})"
        return None
    if os.environ.get("DET_SLOT_TYPE") == "cuda":
        slots = json.loads(os.environ.get("DET_SLOT_IDS") or "[]")
        return max(1, len(slots)), f"Determined runs this container on {max(1, len(slots))} CUDA slot(s)"
    return None


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version, from the driver itself (no CUDA call), or None without a driver."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    match = re.search(r"\b(\d{3,})\.(\d+)(?:\.(\d+))?\b", text)
    return match.group(0) if match else None


def check_gpus(report: Report, torch, mode: str, resources_info: Path, kernel_ok: bool) -> None:
    demand = demanded_gpus(mode, resources_info)
    if demand is None:
        report.ok("GPU checks skipped (--gpu skip)" if mode == "skip" else "no GPUs assigned to this container")
        return
    wanted, why = demand
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    driver = driver_version()
    if driver is None:
        driver_note = "no NVIDIA driver is visible in this container (/proc/driver/nvidia/version is missing)"
    elif int(driver.split(".")[0]) < MIN_DRIVER:
        driver_note = (
            f"the agent's NVIDIA driver is {driver}, older than CUDA {CUDA_VERSION} needs (>= {MIN_DRIVER}): "
            "upgrade the driver on the agents"
        )
    else:
        driver_note = f"NVIDIA driver {driver}"
    if visible == 0:
        said = "; ".join(str(warning.message).strip() for warning in caught)
        report.fail(
            f"no GPU visible: {why}, but torch sees none ({driver_note}{'; torch says: ' + said if said else ''}). "
            f"Check the agents' NVIDIA driver (>= {MIN_DRIVER}) and container runtime."
        )
        return
    if visible < wanted:
        report.fail(f"torch sees {visible} GPU(s), but {why}; {driver_note}.")
        return
    if kernel_ok:
        # One call per kind of GPU: "no kernel image" here means the image lacks this GPU's architecture.
        for capability in sorted({torch.cuda.get_device_capability(index) for index in range(visible)}):
            index = next(i for i in range(visible) if torch.cuda.get_device_capability(i) == capability)
            if not run_kernel(report, torch, index, capability):
                return
    names = sorted({torch.cuda.get_device_name(index) for index in range(visible)})
    report.ok(f"{visible} GPU(s) visible ({', '.join(names)}); {driver_note}")


def run_kernel(report: Report, torch, index: int, capability: tuple[int, int]) -> bool:
    """One tiny forward of the compiled op on GPU `index`."""
    device = torch.device("cuda", index)
    value = torch.ones(1, 4, 1, 2, device=device)  # [N, S, M, D]: one 2x2 level
    shapes = torch.tensor([[2, 2]], device=device)
    starts = torch.zeros(1, dtype=torch.int64, device=device)
    locations = torch.full((1, 1, 1, 1, 1, 2), 0.5, device=device)  # [N, Lq, M, L, P, 2]
    weights = torch.ones(1, 1, 1, 1, 1, device=device)
    try:
        output = torch.ops.deformable_detr_ops.ms_deform_attn(value, shapes, starts, locations, weights)
        torch.cuda.synchronize(device)
    except RuntimeError as error:
        sm = f"{capability[0]}.{capability[1]}"
        report.fail(
            f"the attention kernel does not run on GPU {index} ({torch.cuda.get_device_name(index)}, compute "
            f"capability {sm}): {str(error).splitlines()[0]}. If the image was built without this architecture, "
            f"rebuild it with it: make image CUDA_ARCHS=\"...;{sm}\"."
        )
        return False
    if not torch.allclose(output.cpu(), torch.ones(1, 1, 2)):
        report.fail(f"the attention kernel gives wrong values on GPU {index}: {output.cpu().tolist()}")
        return False
    return True


def record_kernel_sources() -> int:
    """Writes the digest of ops/csrc next to the installed extension (run by install_image.sh)."""
    spec = importlib.util.find_spec(EXTENSION)
    if spec is None or spec.origin is None:
        print(f"check_image: {EXTENSION} is not installed in {sys.executable}; nothing to record", file=sys.stderr)
        return 1
    stamp = Path(spec.origin).with_name(EXTENSION + SOURCES_SUFFIX)
    stamp.write_text(sources_digest(ROOT / "ops") + "\n")
    print(f"check_image: recorded the kernel's sources in {stamp}")
    return 0


def parse_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version like 3.10.12, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", choices=GPU_MODES, default=os.environ.get("DDETR_CHECK_GPU", "auto"),
                        help="whether GPUs must be visible (default: auto, or DDETR_CHECK_GPU)")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--resources-info", type=Path, default=Path(RESOURCES_INFO),
                        help="Determined's resources info (which GPUs the container got)")
    parser.add_argument("--python-version", type=parse_version, default=None,
                        help="check as if this Python version ran (to test the check)")
    parser.add_argument("--record-kernel-sources", action="store_true",
                        help="record which ops/csrc the installed kernel was compiled from, then exit")
    args = parser.parse_args(argv)
    if args.gpu not in GPU_MODES:
        parser.error(f"DDETR_CHECK_GPU={args.gpu!r}: expected one of {', '.join(GPU_MODES)}")
    if args.record_kernel_sources:
        return record_kernel_sources()

    report = Report()
    # Nothing below can be trusted on a Python that is too old: stop at once.
    if not check_python(report, args.python_version or tuple(sys.version_info[:3])):
        return summarize(report)
    pins = read_pins(args.requirements)
    check_pins(report, pins, args.requirements)
    torch = check_torch(report, pins.get("torch"))
    if torch is not None:
        kernel_ok = check_kernel(report, torch)
        check_gpus(report, torch, args.gpu, args.resources_info, kernel_ok)
    return summarize(report)


def summarize(report: Report) -> int:
    if report.failures:
        print(
            f"check_image: {sys.executable} cannot run the trial: {len(report.failures)} problem(s) above",
            file=sys.stderr,
        )
        return 1
    print("check_image: the environment is ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
