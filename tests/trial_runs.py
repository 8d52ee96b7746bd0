"""Helpers for tests that run the trial script for real (Determined's Trainer, in subprocesses)."""

import json
import os
import subprocess
import sys

import yaml

from conftest import REPO_ROOT
from processes import run_group

from deformable_detr.inference.checkpoint_files import steps_completed

TINY_MODEL = {
    "backbone": "resnet18",
    "enc_layers": 1,
    "dec_layers": 1,
    "hidden_dim": 64,
    "dim_feedforward": 64,
    "nheads": 8,
    "num_queries": 20,
    "dropout": 0.0,
}


def write_config(path: str, data: dict, hyperparameters: dict, seed: int = 0) -> str:
    """A minimal experiment config for a local run of a tiny model."""
    config = {
        "name": "test",
        "entrypoint": "python3 model_def.py config.yaml",
        "searcher": {"name": "single", "metric": "mAP", "smaller_is_better": False},
        "reproducibility": {"experiment_seed": seed},
        "data": data,
        "hyperparameters": {**TINY_MODEL, **hyperparameters},
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def run_script(args: list[str], nproc: int = 1, timeout: int = 600, env: dict | None = None) -> str:
    """Run model_def.py (with torchrun when nproc > 1) from the repository root; returns its output."""
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else:
        command = [sys.executable]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1" if nproc > 1 else os.environ.get("OMP_NUM_THREADS", "2")}
    full_env.update(env or {})
    try:
        result = run_group(command + [os.path.join(REPO_ROOT, "model_def.py"), *args], timeout,
                           cwd=REPO_ROOT, env=full_env)
    except subprocess.TimeoutExpired as timed_out:
        raise AssertionError(f"model_def.py {' '.join(args)} did not finish in {timeout} s:\n"
                             f"{(timed_out.output + timed_out.stderr)[-6000:]}") from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"model_def.py {' '.join(args)} failed ({result.returncode}):\n{output[-6000:]}")
    return output


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def checkpoints(checkpoint_dir: str) -> dict[int, str]:
    """Checkpoint folders of a local run by the number of batches trained when they were saved."""
    found = {}
    root = os.path.join(checkpoint_dir, "determined")
    for name in os.listdir(root):
        found[steps_completed(os.path.join(root, name))] = os.path.join(root, name)
    return found
