# The image Determined runs this trial package in (`make image`): the CUDA 13.0 toolkit, Python 3.12 in a
# virtual environment with the pinned requirements.txt, and the deformable-attention kernel (ops/) compiled
# ahead of time, so that nothing is installed or compiled when a container starts. The startup hook checks it.
# The devel flavour is needed: the kernel is compiled with its nvcc. CUDA 13.0 needs NVIDIA driver >= 580.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# python3-dev: Python.h for compiling the kernel; g++: nvcc's host compiler and the CPU kernel.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        g++ python3 python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*

# Determined's entrypoint runs `python3` (DET_PYTHON_EXECUTABLE) and, unless DET_SKIP_PIP_INSTALL is set,
# `pip install --user`s the master's determined wheel, which a virtual environment refuses: the environment
# has the pinned determined instead (requirements.txt; it must match the master's version).
ENV VIRTUAL_ENV=/opt/deformable-detr
ENV PATH=${VIRTUAL_ENV}/bin:${PATH} \
    DET_PYTHON_EXECUTABLE=${VIRTUAL_ENV}/bin/python3 \
    DET_SKIP_PIP_INSTALL=1 \
    PIP_NO_CACHE_DIR=1

# Compute capabilities the kernel is compiled for (sm_80 ... sm_120, plus PTX for newer GPUs).
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0;12.0+PTX"

WORKDIR /tmp/deformable-detr
COPY requirements.txt ./
COPY scripts/install_image.sh scripts/check_image.py scripts/
COPY ops/ ops/
RUN /usr/bin/python3 -m venv "${VIRTUAL_ENV}" \
    && TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" bash scripts/install_image.sh "${VIRTUAL_ENV}/bin/python" \
    && "${VIRTUAL_ENV}/bin/python" scripts/check_image.py --gpu skip \
    && rm -rf /tmp/deformable-detr

WORKDIR /
