#!/usr/bin/env bash
# The startup hook's opt-in slow path (DDETR_INSTALL_ON_START=1): installs the pinned requirements and compiles
# the attention kernel into the given Python's environment, unless the check already passes there. A file
# lock (DDETR_INSTALL_LOCK) makes processes that share that environment install it once: the others wait
# for the first, then find it installed. pip falls back to the user site (PYTHONUSERBASE, which Determined
# sets) where the image's site-packages is read-only.
#
#   bash scripts/install_on_start.sh python3
set -euo pipefail

PY="${1:?usage: install_on_start.sh PYTHON}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="${DDETR_INSTALL_LOCK:-${TMPDIR:-/tmp}/deformable-detr-install.lock}"

exec 9>"$LOCK"
echo "install_on_start: waiting for $LOCK"
flock 9
if "$PY" "$ROOT/scripts/check_image.py" --gpu skip >/dev/null 2>&1; then
    echo "install_on_start: the requirements and the kernel are already installed for $PY"
    exit 0
fi
echo "install_on_start: installing the requirements and compiling the kernel (DDETR_INSTALL_ON_START=1);" \
    "a prebuilt image (make image, docs/cluster.md) starts in seconds instead"
start=$SECONDS
bash "$ROOT/scripts/install_image.sh" "$PY"
echo "install_on_start: installed in $((SECONDS - start)) s"
