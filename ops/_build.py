"""Finds, builds and loads the compiled kernel library (`ms_deform_attn_ext`).

Order: the module installed ahead of time by `pip install ./ops` if importable; otherwise a JIT build with
ninja into a per-user cache, keyed by the sources, the torch version, whether CUDA is built and the CPU, guarded
by a file lock so that several processes on one node build once. On x86-64 a JIT build targets this machine's
CPU (`-march=native`: its AVX2 / AVX-512 vectors for the kernel's channel loops), so the key includes the CPU's
feature flags; the installed module stays portable (baseline x86-64). With no C++ compiler or no ninja the package
falls back to the pure-PyTorch reference and logs why, once; any other build failure raises.

Environment (read at each call, so it can be changed between calls):
    DDETR_MSDA_IMPL: "auto" (default: the kernel wherever it builds), "kernel" (fail if the kernel cannot be
        built) or "reference" (the authors' pure-PyTorch arithmetic, bit for bit; nothing is built).
    DDETR_MSDA_CACHE_DIR: where JIT builds go (default $XDG_CACHE_HOME or ~/.cache, then deformable_detr_ops).
"""

import hashlib
import importlib
import importlib.util
import logging
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

LOGGER = logging.getLogger(__name__)
EXTENSION_NAME = "ms_deform_attn_ext"
IMPL_ENV = "DDETR_MSDA_IMPL"
CACHE_ENV = "DDETR_MSDA_CACHE_DIR"
IMPL_CHOICES = ("auto", "kernel", "reference")
SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
# -fopenmp-simd honours `#pragma omp simd` (vectorised channel loops) without linking an OpenMP runtime.
CXX_FLAGS = ["-O3", "-fopenmp-simd"]
HOST_CXX_FLAGS = ["-march=native"]  # JIT builds on x86-64 only: built where they run


@dataclass
class KernelState:
    """What this process found: `loaded` is None until the first attempt to load the kernel."""

    loaded: bool | None = None
    origin: str = ""  # "installed", a build directory, or why the kernel cannot be built
    reference_logged: bool = False


STATE = KernelState()


def cpp_sources() -> list[Path]:
    """The schema file and the CPU kernel."""
    return [SOURCE_DIR / "ms_deform_attn.cpp", SOURCE_DIR / "cpu" / "ms_deform_attn_cpu.cpp"]


def cuda_sources() -> list[Path]:
    """The CUDA kernel."""
    return [SOURCE_DIR / "cuda" / "ms_deform_attn_cuda.cu"]


def headers() -> list[Path]:
    """Headers shared by the sources (part of the build key)."""
    return sorted(SOURCE_DIR.glob("*.h"))


def requested_impl() -> str:
    """The value of DDETR_MSDA_IMPL, checked."""
    impl = os.environ.get(IMPL_ENV, "auto").strip().lower() or "auto"
    if impl not in IMPL_CHOICES:
        raise ValueError(f"{IMPL_ENV}={impl!r}: expected one of {', '.join(IMPL_CHOICES)}")
    return impl


def missing_toolchain() -> str | None:
    """Why a JIT build cannot run here (no C++ compiler, no ninja), or None."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH; set CXX)"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


def cuda_build_wanted() -> bool:
    """CUDA sources are built when a GPU is visible and a CUDA toolkit was found."""
    from torch.utils import cpp_extension

    if not torch.cuda.is_available():
        return False
    if cpp_extension.CUDA_HOME is None:
        LOGGER.warning(
            "ms_deform_attn: a GPU is visible but no CUDA toolkit was found (set CUDA_HOME to the folder that "
            "holds bin/nvcc); building the CPU kernel only, so the op will refuse CUDA tensors"
        )
        return False
    return True


def wheel_cuda_include_dirs() -> list[str]:
    """Header folders of the `nvidia` wheels torch depends on (cuSPARSE, cuBLAS, ...), which a toolkit that
    ships only nvcc and cudart lacks; ATen/cuda/CUDAContext.h includes them."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    found = []
    for root in spec.submodule_search_locations:
        for include in sorted(Path(root).glob("*/include")):
            if (include / "cusparse.h").is_file():
                found.append(str(include))
    return found


def jit_cxx_flags() -> list[str]:
    """The C++ flags of a JIT build: the portable ones, plus the host CPU's instruction set on x86-64 (where gcc
    and clang both take -march=native)."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        return CXX_FLAGS + HOST_CXX_FLAGS
    return list(CXX_FLAGS)


def cpu_features() -> str:
    """What a -march=native build depends on: the machine and, on Linux, the CPU's feature flags."""
    machine = platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return machine + ":" + " ".join(sorted(line.split(":", 1)[1].split()))
    return machine + ":" + platform.processor()  # elsewhere the processor's name is what there is


def build_key(with_cuda: bool) -> str:
    """Hash of everything the binary depends on: sources, headers, torch version, CUDA or not, compiler flags and
    the CPU they target."""
    digest = hashlib.sha256()
    for path in cpp_sources() + cuda_sources() + headers():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(torch.__version__.encode())
    digest.update(b"cuda" if with_cuda else b"cpu")
    digest.update(os.environ.get("TORCH_CUDA_ARCH_LIST", "").encode() if with_cuda else b"")
    flags = jit_cxx_flags()
    digest.update(" ".join(flags).encode())
    if HOST_CXX_FLAGS[0] in flags:
        digest.update(cpu_features().encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deformable_detr_ops"


def build_library(build_dir: Path, with_cuda: bool, verbose: bool = False) -> None:
    """Compiles the sources into `build_dir` (reusing an up-to-date build) and loads the library.

    The file lock makes concurrent processes wait for the first one's build instead of racing it.
    """
    from filelock import FileLock
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    sources = [str(path) for path in cpp_sources() + (cuda_sources() if with_cuda else [])]
    with FileLock(str(build_dir / "build.lock")):
        cpp_extension.load(
            name=EXTENSION_NAME,
            sources=sources,
            extra_cflags=jit_cxx_flags(),
            extra_cuda_cflags=["-O3"],
            extra_include_paths=wheel_cuda_include_dirs() if with_cuda else [],
            build_directory=str(build_dir),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=verbose,
        )


def ensure_loaded() -> bool:
    """Whether calls use the compiled kernel now: False under DDETR_MSDA_IMPL=reference; otherwise loads the
    kernel on the first call (or finds that it cannot be built here and says why, once)."""
    impl = requested_impl()
    if impl == "reference":
        if not STATE.reference_logged:
            LOGGER.info("ms_deform_attn: using the pure-PyTorch reference (%s=reference)", IMPL_ENV)
            STATE.reference_logged = True
        return False
    if STATE.loaded is None:
        _load()
    if impl == "kernel" and not STATE.loaded:
        raise RuntimeError(f"ms_deform_attn: {IMPL_ENV}=kernel but the kernel cannot be built: {STATE.origin}")
    return bool(STATE.loaded)


def _load() -> None:
    """Imports the installed module, or JIT-builds the kernel; records the outcome in STATE."""
    if importlib.util.find_spec(EXTENSION_NAME) is not None:
        # Installed by `pip install ./ops`; importing it registers the ops.
        importlib.import_module(EXTENSION_NAME)
        STATE.loaded, STATE.origin = True, "installed"
    else:
        missing = missing_toolchain()
        if missing is not None:
            STATE.loaded, STATE.origin = False, missing
            if requested_impl() != "kernel":
                LOGGER.warning(
                    "ms_deform_attn: cannot build the compiled kernel (%s); using the slower pure-PyTorch reference",
                    missing,
                )
            return
        with_cuda = cuda_build_wanted()
        build_dir = default_cache_dir() / f"{EXTENSION_NAME}-{build_key(with_cuda)}"
        build_library(build_dir, with_cuda)
        STATE.loaded, STATE.origin = True, str(build_dir)
    from . import _registration

    _registration.register_python_parts()
