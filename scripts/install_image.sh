#!/usr/bin/env bash
# Installs what a trial needs into the environment of the given Python: the pinned requirements.txt, then the
# deformable-attention kernel (ops/) compiled ahead of time for the GPU architectures in TORCH_CUDA_ARCH_LIST.
# The Dockerfile runs it; so does the test that builds a fresh environment, and the startup hook's opt-in
# install (DDETR_INSTALL_ON_START=1).
#
#   bash scripts/install_image.sh /opt/venv/bin/python
#
# Environment:
#   TORCH_CUDA_ARCH_LIST  compute capabilities to compile for (default below: A100, A10/A40/RTX 30, L4/L40/RTX 40,
#                         H100/H200, B200, RTX 50/RTX PRO Blackwell, plus PTX for newer GPUs).
#   CUDA_HOME             the CUDA toolkit root (default: the toolkit of the nvcc on PATH).
#   MAX_JOBS              parallel compile jobs (default: all cores).
set -euo pipefail

PY="${1:?usage: install_image.sh PYTHON}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;8.6;8.9;9.0;10.0;12.0+PTX}"

# The pins need Python >= 3.11 (numpy 2.4, scipy 1.17); say so before pip fails on a missing version.
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); the pinned" \
        "requirements need Python >= 3.11. Use an image with a newer Python (see docs/cluster.md)." >&2
    exit 1
fi

# nvcc may be a wrapper script; `nvcc -dryrun` prints the toolkit root it really uses (TOP=...).
if [ -z "${CUDA_HOME:-}" ]; then
    if ! command -v nvcc >/dev/null 2>&1; then
        echo "error: no nvcc on PATH and CUDA_HOME is not set: the CUDA kernel cannot be compiled." \
            "Use a CUDA 13.0 *devel* image (it has nvcc) or set CUDA_HOME to the toolkit root." >&2
        exit 1
    fi
    top=$(nvcc -dryrun -E -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)
    CUDA_HOME=$(cd "${top:-$(dirname "$(command -v nvcc)")/..}" && pwd -P)
fi
export CUDA_HOME
echo "install_image: Python $("$PY" -c 'import platform; print(platform.python_version())'), CUDA toolkit" \
    "$CUDA_HOME, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"

"$PY" -m pip install --disable-pip-version-check -r "$ROOT/requirements.txt"

# Without a visible GPU (an image build) setup.py compiles the CUDA sources only when asked to.
# `--threads 0` lets nvcc compile the architectures in parallel.
DDETR_MSDA_FORCE_CUDA=1 NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:-} --threads 0" \
    "$PY" -m pip install --disable-pip-version-check --no-build-isolation --no-deps "$ROOT/ops"

# Records which sources the kernel was compiled from, so that the startup hook can tell a stale image.
"$PY" "$ROOT/scripts/check_image.py" --record-kernel-sources
