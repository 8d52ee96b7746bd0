"""Work-arounds for Determined 0.38.1 under torch 2.14, and for its local (off-cluster) mode.

Everything here depends on Determined's private behaviour (file formats, internal defaults) because
0.38.1 has no public API for it; the canary tests in `tests/test_cluster_launch.py` fail when Determined
changes it. The rest of the package uses only Determined's public API (`det.get_cluster_info()`,
`det.pytorch.init`, the trial context's getters).
"""

import logging
import os
import random

import determined as det
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


def direct_checkpoint_storage(context) -> str | None:
    """The folder Determined writes checkpoint folders into directly (`<folder>/<storage id>/`: local runs and
    shared_fs storage), or None when it uploads them after they are written (cloud storage)."""
    manager = context._core.checkpoint._storage_manager
    return os.fspath(manager._base_path) if manager.store_path_is_direct_access() else None


def exit_after_checkpoint() -> BaseException:
    """The exception that makes Determined's trainer leave training the way a preemption does: it writes a
    checkpoint (unless the latest is current) and returns from `fit()` without error."""
    return det.pytorch._ShouldExit()


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


# What Determined's stand-in for the master (local mode) logs at INFO for every call made to it.
_LOCAL_MASTER_CALLS = ("status: ", "upload_tensorboard_files()", "report_progress ")
# Every metric of every report, on one line each (over 40 values with the auxiliary losses).
_METRIC_REPORTS = ("report_training_metrics(", "report_validation_metrics(")


class _DropMessages(logging.Filter):
    """Drops the records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_local_core_log(metrics_file: str | None) -> logging.Filter:
    """Off the cluster, keep Determined's core log to what a reader can use (saved checkpoints, warnings).

    Its stand-in for the master logs every status change, progress report and TensorBoard upload: about three
    quarters of a local run's log. The metric reports go too when `metrics_file` keeps them (the progress lines
    show the main losses). Returns the filter (installed on the `determined.core` logger).
    """
    prefixes = _LOCAL_MASTER_CALLS + (_METRIC_REPORTS if metrics_file else ())
    core_logger = logging.getLogger("determined.core")
    for installed in list(core_logger.filters):
        if isinstance(installed, _DropMessages):
            core_logger.removeFilter(installed)  # one run's setting, not the last run's in this process
    dropper = _DropMessages(prefixes)
    core_logger.addFilter(dropper)
    return dropper
