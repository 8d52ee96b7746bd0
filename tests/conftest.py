"""Shared test set-up: the repository root on sys.path, so tests import the package as Determined does."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
