"""Ahead-of-time build of the kernel library: `pip install --no-build-isolation ./ops`.

Installs the top-level extension module `ms_deform_attn_ext`, which `ops` imports in preference to a JIT
build. CUDA sources are included when a CUDA toolkit is found and either a GPU is visible or
DDETR_MSDA_FORCE_CUDA=1 (to build on a machine without a GPU; set TORCH_CUDA_ARCH_LIST then).
"""

import os
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _build import CXX_FLAGS, EXTENSION_NAME, cpp_sources, cuda_sources, wheel_cuda_include_dirs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def relative(paths: list) -> list[str]:
    """setuptools wants source paths relative to this folder."""
    return [os.path.relpath(path, HERE) for path in paths]


def extension() -> CppExtension:
    with_cuda = CUDA_HOME is not None and (
        torch.cuda.is_available() or os.environ.get("DDETR_MSDA_FORCE_CUDA") == "1"
    )
    if with_cuda:
        return CUDAExtension(
            EXTENSION_NAME,
            relative(cpp_sources() + cuda_sources()),
            include_dirs=wheel_cuda_include_dirs(),
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": ["-O3"]},
        )
    return CppExtension(EXTENSION_NAME, relative(cpp_sources()), extra_compile_args={"cxx": CXX_FLAGS})


setup(
    name="deformable-detr-ops",
    version="1.0.0",
    description="Multi-scale deformable attention kernels (CPU, CUDA) registered with the PyTorch dispatcher",
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.11",
)
