"""Work-arounds for Determined 0.38.1 under torch 2.14, and for its local (off-cluster) mode.

Everything here depends on Determined's private behaviour (file formats, internal defaults) because
0.38.1 has no public API for it; the canary tests in `tests/test_cluster_launch.py` fail when Determined
changes it. The rest of the package uses only Determined's public API (`det.get_cluster_info()`,
`det.pytorch.init`, the trial context's getters).
"""

import os
import pickle
import random

import numpy as np
import torch

from deformable_detr.inference.loading import DETERMINED_CHECKPOINT_GLOBALS


def allow_determined_rng_state() -> None:
    """Let `torch.load(weights_only=True)` (torch's default since 2.6) read Determined's checkpoints.

    Determined saves numpy's RNG state in its checkpoints and restores it with a bare `torch.load`;
    the numpy objects in that state are not on torch's allow-list, so a resume fails with
    "Weights only load failed ... numpy._core.multiarray._reconstruct". Allow exactly those.
    """
    torch.serialization.add_safe_globals(DETERMINED_CHECKPOINT_GLOBALS)


def set_random_seeds(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators as `det.pytorch.init` seeds a trial on a cluster (with
    the trial seed); a local run does not get this from Determined, and 0.38.1 has no public function for it."""
    random.seed(seed)
    np.random.seed(seed)
    torch.random.manual_seed(seed)


def batches_trained_in_checkpoint(checkpoint_dir: str) -> int:
    """How many training batches a checkpoint of a local run had done.

    A local run resumes with Determined's batch counter restored but its data loader at the first
    batch; the trial skips this many batches itself so that the data continues where it stopped.
    """
    state_file = os.path.join(checkpoint_dir, "trial_state.pkl")
    if not os.path.isfile(state_file):
        raise FileNotFoundError(f"{checkpoint_dir!r} is not a Determined checkpoint: no trial_state.pkl in it")
    with open(state_file, "rb") as f:
        state = pickle.load(f)  # written by Determined for this run
    return int(state["batches_trained"])


def use_local_checkpoint(checkpoint_dir: str, checkpoint_root: str | None) -> str:
    """Point Determined's local storage at the folder holding `checkpoint_dir`; returns its storage id.

    Local runs keep checkpoints in `$XDG_DATA_HOME/determined/<storage id>/`, and resume by id.
    """
    checkpoint_dir = os.path.abspath(checkpoint_dir)
    storage_root = os.path.dirname(checkpoint_dir)
    if not os.path.isdir(checkpoint_dir) or os.path.basename(storage_root) != "determined":
        raise ValueError(
            f"--resume takes a checkpoint folder of a local run (<checkpoint-dir>/determined/<id>), got {checkpoint_dir!r}"
        )
    data_home = os.path.dirname(storage_root)
    if checkpoint_root and os.path.abspath(checkpoint_root) != data_home:
        raise ValueError(f"--resume {checkpoint_dir!r} does not lie in --checkpoint-dir {checkpoint_root!r}")
    os.environ["XDG_DATA_HOME"] = data_home
    return os.path.basename(checkpoint_dir)
