"""A run killed (SIGKILL) while it writes a checkpoint loses nothing but the batches since its latest
complete checkpoint: resuming from the parent folder continues from that checkpoint, and the continuation
ends with the same weights, bit for bit, as a run that was never interrupted."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO_ROOT
from deformable_detr.inference.checkpoint_files import METADATA_FILE, latest_complete_checkpoint, steps_completed
from deformable_detr.inference.loading import DETERMINED_CHECKPOINT_GLOBALS
from trial_runs import run_script, write_config

pytestmark = pytest.mark.slow

TOTAL_BATCHES = 6
KILLS = 5  # at most: a kill needs two batches still to run
SEED = 20240611
DATA = {"backend": "fake", "fake_length": 16, "image_scale": 0.2, "num_workers": 0, "trainer": {
    "validation_period": {"batches": 1000}, "checkpoint_period": {"batches": 1}, "reporting_period": {"batches": 1}}}


def checkpoint_folders(checkpoint_dir: str) -> set[str]:
    storage = os.path.join(checkpoint_dir, "determined")
    return set(os.listdir(storage)) if os.path.isdir(storage) else set()


def start(args: list[str], log: str) -> subprocess.Popen:
    # One thread each: the uninterrupted run trains beside the killed ones on a small machine.
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "model_def.py"), *args], cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_during_a_checkpoint_write(args: list[str], checkpoint_dir: str, nth: int, delay: float, log: str) -> None:
    """Start model_def.py; when the `nth` new checkpoint folder appears, wait `delay` s and SIGKILL it."""
    before = checkpoint_folders(checkpoint_dir)
    process = start(args, log)
    try:
        while process.poll() is None:
            if len(checkpoint_folders(checkpoint_dir) - before) >= nth:
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
            time.sleep(0.002)
        with open(log) as f:
            raise AssertionError(f"the run ended ({process.returncode}) before it could be killed:\n{f.read()[-4000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def weights_at(checkpoint: str) -> dict[str, torch.Tensor]:
    with torch.serialization.safe_globals(DETERMINED_CHECKPOINT_GLOBALS):
        state = torch.load(os.path.join(checkpoint, "state_dict.pth"), map_location="cpu", weights_only=True)
    return state["models_state_dict"][0]


def test_runs_killed_while_writing_checkpoints_resume_to_the_uninterrupted_weights(tmp_path):
    hparams = {"global_batch_size": 2, "num_classes": 5, "lr_backbone": 0.0}  # a frozen backbone: smaller files
    config = write_config(str(tmp_path / "c.yaml"), DATA, hparams)
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    uninterrupted = start([config, "--checkpoint-dir", straight, "--max-batches", str(TOTAL_BATCHES)],
                          str(tmp_path / "straight.log"))

    try:
        rng = random.Random(SEED)
        common = [config, "--checkpoint-dir", killed, "--max-batches", str(TOTAL_BATCHES)]
        incomplete_seen, resumed_from = 0, []
        for kill in range(KILLS):
            # A fast machine may finish checkpoints within the delay: leave the last batch to the final run.
            remaining = TOTAL_BATCHES - (resumed_from[-1] if resumed_from else 0)
            if remaining < 2:
                break
            # The first kill lands the moment the folder appears, so at least one write is surely cut short.
            nth, delay = min(rng.choice((1, 2)), remaining - 1), 0.0 if kill == 0 else rng.uniform(0.0, 0.2)
            resume = ["--resume", killed] if resumed_from else []  # a fresh start until one is complete
            kill_during_a_checkpoint_write(common + resume, killed, nth, delay, str(tmp_path / f"killed{kill}.log"))
            storage = os.path.join(killed, "determined")
            incomplete_seen += sum(not os.path.isfile(os.path.join(storage, name, METADATA_FILE))
                                   for name in os.listdir(storage))
            complete = {name: steps_completed(os.path.join(storage, name)) for name in os.listdir(storage)
                        if os.path.isfile(os.path.join(storage, name, METADATA_FILE))}
            if complete:  # resuming from the parent folder picks the complete checkpoint with the most batches
                latest = latest_complete_checkpoint(killed)
                assert steps_completed(latest) == max(complete.values())
                resumed_from.append(steps_completed(latest))
        assert incomplete_seen >= 1, "no kill landed inside a checkpoint write"

        run_script(common + ["--resume", killed], env={"OMP_NUM_THREADS": "1"})
        assert uninterrupted.wait(timeout=120) == 0, (tmp_path / "straight.log").read_text()[-4000:]
    finally:
        if uninterrupted.poll() is None:
            uninterrupted.kill()
            uninterrupted.wait()
    final = latest_complete_checkpoint(killed)
    assert steps_completed(final) == TOTAL_BATCHES
    expected = weights_at(latest_complete_checkpoint(straight))
    actual = weights_at(final)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{key} differs after the kills (resumed at batches {resumed_from})"
