#!/usr/bin/env bash
# Run by Determined in every container of a trial before the entrypoint (the context directory is the cwd).
# Installs what the image lacks and builds the deformable-attention kernel ahead of time, so that the
# workers do not compile it on first use.
set -euo pipefail
python3 -m pip install --quiet --disable-pip-version-check -r requirements.txt
python3 -m pip install --quiet --disable-pip-version-check --no-build-isolation ./ops
