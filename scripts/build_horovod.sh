#!/usr/bin/env bash
# Build horovod 0.28.1 (PyTorch + gloo, CPU collectives) for torch 2.14 into the given Python's environment.
#
#   bash scripts/build_horovod.sh .venv/bin/python
#
# The 0.28.1 sdist does not build as shipped against torch 2.14: torch's headers need C++20 in the torch
# extension, and gloo's headers define `kDefaultTimeout` twice at link time unless the top level stays at C++17.
# CMake standards cannot be overridden from the environment in 0.28.1, so the unpacked sdist is patched.
set -euo pipefail

PY="${1:-python3}"
VERSION=0.28.1

if "$PY" -c "import horovod.torch" 2>/dev/null; then
    echo "horovod is already importable by $PY; nothing to do"
    exit 0
fi

# nvcc may be a wrapper script; `nvcc -dryrun` prints the toolkit root it really uses (TOP=...).
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
    top=$(nvcc -dryrun -E -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)
    if [ -n "$top" ]; then
        CUDA_HOME=$(cd "$top" && pwd -P)
    fi
fi
if [ -n "${CUDA_HOME:-}" ]; then
    echo "CUDA toolkit: $CUDA_HOME"
    export CUDA_HOME HOROVOD_CUDA_HOME="$CUDA_HOME"  # torch.utils.cpp_extension reads CUDA_HOME too
else
    echo "no CUDA toolkit found: building horovod for CPU only"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" -m pip download --no-deps --no-binary :all: --dest "$work" "horovod==$VERSION"
tar -xzf "$work/horovod-$VERSION.tar.gz" -C "$work"
src="$work/horovod-$VERSION"

"$PY" - "$src" <<'EOF'
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1])
for relative, standard in (("horovod/torch/CMakeLists.txt", "20"), ("CMakeLists.txt", "17")):
    path = src / relative
    text = path.read_text()
    patched, count = re.subn(r"set\(CMAKE_CXX_STANDARD \d+\)", f"set(CMAKE_CXX_STANDARD {standard})", text)
    if count == 0:
        sys.exit(f"{path}: no set(CMAKE_CXX_STANDARD ...) line to patch")
    path.write_text(patched)
    print(f"{relative}: CMAKE_CXX_STANDARD -> {standard} ({count} line(s))")
EOF

HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITH_GLOO=1 "$PY" -m pip install --no-build-isolation "$src"
"$PY" -c "import horovod, horovod.torch as hvd; print('horovod', horovod.__version__, 'built; gloo:', hvd.gloo_built())"
