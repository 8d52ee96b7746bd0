#!/usr/bin/env bash
# Determined sources this file in every container of a trial, before the trial starts (the context directory
# is the working directory). It checks, in seconds, that the image has what the trial needs (pinned
# requirements, torch's CUDA 13.0 build, the compiled attention kernel, visible GPUs on GPU slots) and stops
# the trial with a message saying what to fix when it does not. It installs nothing: build the image with
# `make image` and name it in environment.image (docs/cluster.md).
#
# DDETR_INSTALL_ON_START=1 (in environment.environment_variables) opts into installing the requirements and
# compiling the kernel in each container instead: minutes per start, for images that lack them.
#
# Sourced by Determined's bash entrypoint: no `set -e`/`set -u` here, which would change its shell; a failure
# exits, which ends the container before the trial runs.
if [ "${DDETR_INSTALL_ON_START:-0}" = "1" ]; then
    bash scripts/install_on_start.sh "${DET_PYTHON_EXECUTABLE:-python3}" || exit 1
fi
"${DET_PYTHON_EXECUTABLE:-python3}" scripts/check_image.py || exit 1
