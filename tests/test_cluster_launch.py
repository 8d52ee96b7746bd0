"""model_def.py as a cluster runs it, and canaries for the Determined internals the package depends on.

The launch test runs the configs' entrypoint, `python3 -m determined.launch.torch_distributed python3
model_def.py <config>`, with the cluster info a master gives a TRIAL task (trial id, hyperparameter sample,
experiment config, trial seed, latest checkpoint; two slots), so that Determined's own launcher starts its
pid server, torchrun, pid client and rank wrapper, and two model_def.py workers. It goes as far as Determined
goes without a master: the first call to the master, made inside `det.pytorch.init`, is where a run without
one must stop (docs/cluster.md, "What the tests cover and what needs a master").
"""

import inspect
import json
import logging
import os
import random
import socket
import sys

import determined as det
import determined.pytorch  # noqa: F401  (det.pytorch is not imported by `import determined`)
import numpy as np
import pytest
import torch
from determined import _info

from conftest import REPO_ROOT
from deformable_detr.training.determined_compat import (
    direct_checkpoint_storage,
    exit_after_checkpoint,
    quiet_local_core_log,
    set_random_seeds,
)
from processes import run_group
from trial_runs import TINY_MODEL

SITE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures", "cluster_site")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------- canaries
def test_cluster_info_comes_from_the_fixed_paths_the_launch_test_replaces():
    """The launch test installs cluster info the way `ClusterInfo._from_file` reads it (sitecustomize)."""
    assert _info.DEFAULT_CLUSTER_INFO_PATH == "/run/determined/info/cluster.json"
    assert _info.DEFAULT_TRIAL_INFO_PATH == "/run/determined/info/trial.json"
    source = inspect.getsource(_info.ClusterInfo._from_file)
    for reader in ("TrialInfo._from_file()", "RendezvousInfo._from_file()", "ResourcesInfo._from_file()"):
        assert reader in source
    assert "_info = ClusterInfo._from_file()" in inspect.getsource(_info.get_cluster_info)
    trial_fields = set(inspect.signature(_info.TrialInfo.__init__).parameters) - {"self"}
    assert trial_fields == {"trial_id", "experiment_id", "trial_seed", "hparams", "config", "steps_completed",
                            "trial_run_id", "debug", "inter_node_network_interface"}


def test_set_random_seeds_seeds_like_determined_on_a_cluster():
    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    det.pytorch._trainer._set_random_seeds(1234)
    theirs = draws()
    set_random_seeds(1234)
    assert draws() == theirs
    set_random_seeds(1235)
    assert draws() != theirs


def test_init_takes_the_aggregation_frequency_and_steps_call_the_clip_hook():
    assert inspect.signature(det.pytorch.init).parameters["aggregation_frequency"].default == 1
    step = inspect.signature(det.pytorch.PyTorchTrialContext.step_optimizer).parameters
    assert {"clip_grads", "auto_zero_grads", "scaler"} <= set(step)
    # The trial rescales accumulated gradients in clip_grads: Determined must call it after averaging them and
    # only on the batch that steps.
    source = inspect.getsource(det.pytorch.PyTorchTrialContext.step_optimizer)
    assert source.index("if not self._should_communicate_and_update():") < source.index(
        "self._average_gradients(") < source.index("clip_grads(parameters)")


def test_local_checkpoints_are_written_directly_under_xdg_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with det.pytorch.init(hparams={"global_batch_size": 1}, exp_conf={}) as context:
        assert direct_checkpoint_storage(context) == os.path.join(str(tmp_path), "determined")


@pytest.mark.parametrize("metrics_file", [None, "metrics.jsonl"])
def test_the_local_master_stand_in_is_quiet_but_checkpoints_still_show(caplog, metrics_file):
    """Determined's local stand-in for the master logs each call at INFO; the filter keeps what a reader uses,
    and the metric reports unless no metrics file keeps them."""
    from determined.core._train import DummyTrainContext

    def calls() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="determined.core"):
            train = DummyTrainContext()
            train.set_status("training")
            train.report_progress(0.5)
            train.upload_tensorboard_files()
            train.report_training_metrics(steps_completed=4, metrics={"loss": 1.0})
            train.report_validation_metrics(steps_completed=4, metrics={"mAP": 0.5})
            logging.getLogger("determined.core").info("saved checkpoint abc")
        return [record.getMessage() for record in caplog.records]

    core_logger = logging.getLogger("determined.core")
    assert len(calls()) == 6  # the canary: what the stand-in logs without the filter
    dropper = quiet_local_core_log(metrics_file)
    try:
        assert quiet_local_core_log(metrics_file) is not dropper  # replaced, not stacked
        assert sum(isinstance(f, type(dropper)) for f in core_logger.filters) == 1
        kept = calls()
    finally:
        for installed in list(core_logger.filters):
            core_logger.removeFilter(installed)
    reports = ["report_training_metrics(steps_completed=4, metrics={'loss': 1.0})",
               "report_validation_metrics(steps_completed=4, metrics={'mAP': 0.5})"]
    assert kept == ([] if metrics_file else reports) + ["saved checkpoint abc"]


def test_exit_after_checkpoint_is_the_trainers_preemption_exit():
    error = exit_after_checkpoint()
    assert isinstance(error, Exception) and type(error).__name__ == "_ShouldExit"
    # The trainer's loop catches it, checkpoints unsaved work and returns.
    source = inspect.getsource(det.pytorch._pytorch_trial)
    assert "except pytorch._ShouldExit as e:" in source and "self._checkpoint(already_exiting=True)" in source


# ------------------------------------------------------------------------------------------ the launch
def _write_cluster_info(info_dir: str, master_url: str, exp_conf: dict, hparams: dict, latest: str) -> None:
    """The four files a Determined container holds for a TRIAL task, written by Determined's own writers."""
    os.makedirs(info_dir)
    trial = _info.TrialInfo(trial_id=7, experiment_id=3, trial_seed=777, hparams=hparams, config=exp_conf,
                            steps_completed=4, trial_run_id=2, debug=False, inter_node_network_interface=None)
    trial._to_file(os.path.join(info_dir, "trial.json"))
    _info.RendezvousInfo(container_addrs=["127.0.0.1"], container_rank=0, container_slot_counts=[2])._to_file(
        os.path.join(info_dir, "rendezvous.json"))
    _info.ResourcesInfo(gpu_uuids=[])._to_file(os.path.join(info_dir, "resources.json"))
    cluster = _info.ClusterInfo(master_url=master_url, cluster_id="test-cluster", agent_id="agent-0",
                                slot_ids=[0, 1], task_id="3.7", allocation_id=f"3.7.{os.getpid()}",
                                session_token="task-token", task_type="TRIAL", latest_checkpoint=latest)
    cluster._to_file(os.path.join(info_dir, "cluster.json"))


@pytest.mark.slow
def test_launcher_runs_model_def_as_a_trial_up_to_the_master(tmp_path):
    master_url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    hparams = {**TINY_MODEL, "global_batch_size": 4, "aggregation_frequency": 2, "lr": 1e-4}
    exp_conf = {
        "name": "launch-test",
        "entrypoint": "python3 -m determined.launch.torch_distributed python3 model_def.py config.yaml",
        "searcher": {"name": "single", "metric": "mAP", "smaller_is_better": False},
        "resources": {"slots_per_trial": 2},
        "checkpoint_storage": {"type": "directory", "container_path": str(tmp_path / "checkpoints")},
        "data": {"backend": "fake", "fake_length": 8, "image_scale": 0.2, "num_workers": 0},
        "hyperparameters": hparams,
    }
    latest = "5f0c2a3e-0000-4000-8000-000000000001"
    info_dir = str(tmp_path / "info")
    _write_cluster_info(info_dir, master_url, exp_conf, hparams, latest)
    # The config file on the command line is what a user submitted; on a cluster the master's copy is used.
    with open(tmp_path / "config.yaml", "w") as f:
        json.dump({**exp_conf, "hyperparameters": {"lr": "not the master's"}}, f)

    env = {
        **os.environ,
        "PYTHONPATH": SITE_DIR,
        "DDETR_TEST_CLUSTER_INFO_DIR": info_dir,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],  # the launcher runs `python3`
        "C10D_PORT": str(_free_port()),
        "DET_USER": "determined",  # the task's login, as the master sets it
        "DET_SESSION_TOKEN": "task-token",
        "DET_RETRY_CONFIG": json.dumps({"total": 0}),  # fail at once instead of retrying the master for minutes
        "OMP_NUM_THREADS": "1",
    }
    result = run_group(
        [sys.executable, "-m", "determined.launch.torch_distributed",
         "python3", "model_def.py", str(tmp_path / "config.yaml")],
        300, cwd=REPO_ROOT, env=env,
    )
    output = result.stdout + result.stderr

    # Both workers, started by torchrun under the launcher's rank wrapper, read the master's trial.
    tail = output[-4000:]
    for rank in (0, 1):
        assert f"[rank={rank}] INFO: " in output, tail
    seen = f"trial 7 of experiment 3 on the cluster: trial seed 777, resuming from checkpoint {latest}"
    assert output.count(seen) == 2, tail
    assert output.count("gradient accumulation: one optimizer step every 2 batches") == 2, tail
    # Determined's init then formed the process group of both workers (a rendezvous: neither gets past it
    # alone) and stopped, in each, at its first call to the master: preparing the run for reporting.
    assert result.returncode != 0
    for rank in (0, 1):
        assert f"[rank={rank}] [rank{rank}]: determined.common.api.errors.MasterNotFoundException" in output, tail
        assert f"[rank={rank}] [rank{rank}]:     return bindings.post_RunPrepareForReporting(" in output, tail
    assert "url: /api/v1/runs/start" in output and "Connection refused" in output, tail
