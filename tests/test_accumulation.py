"""Gradient accumulation (`aggregation_frequency`) trains like the larger batch: two torchrun workers with
global batch 4 and 2 accumulated batches per step end with the weights of global batch 8 without
accumulation, through Determined's real Trainer."""

import os

import pytest
import torch

from deformable_detr.inference.loading import DETERMINED_CHECKPOINT_GLOBALS
from trial_runs import checkpoints, read_metrics, run_script, write_config

pytestmark = pytest.mark.slow

# 16 images of a fixed size (the flip augmentation keeps the size, so no batch pads differently), 1 to 6
# boxes each: the box counts of the accumulated batches differ, which the loss normalisation must handle.
DATA = {"backend": "fake", "fake_length": 16, "image_scale": 0.2, "num_workers": 0, "augmentation": "flip"}
# SGD keeps the update linear in the gradient, so float noise stays float noise (Adam would amplify it
# on near-zero gradients); the LR drops after every epoch (2 optimizer steps); clipping stays on.
HPARAMS = {"sgd": True, "lr": 0.1, "lr_backbone": 0.01, "lr_drop": 1, "clip_max_norm": 0.1, "dropout": 0.0}
STEPS = 4  # optimizer steps: 2 epochs of 16 images at 8 images per step


def _train(tmp_path, name: str, global_batch_size: int, aggregation_frequency: int) -> dict:
    batches = STEPS * aggregation_frequency
    trainer = {"validation_period": {"batches": 1000}, "checkpoint_period": {"batches": batches // 2},
               "reporting_period": {"batches": batches // 2}}
    hparams = {**HPARAMS, "global_batch_size": global_batch_size, "aggregation_frequency": aggregation_frequency}
    config = write_config(str(tmp_path / f"{name}.yaml"), {**DATA, "trainer": trainer}, hparams)
    metrics_file = str(tmp_path / f"{name}.jsonl")
    run_script([config, "--checkpoint-dir", str(tmp_path / name), "--metrics-file", metrics_file,
                "--max-batches", str(batches)], nproc=2)
    found = checkpoints(str(tmp_path / name))
    return {"half": _load(found[batches // 2]), "end": _load(found[batches]), "metrics": read_metrics(metrics_file)}


def _load(checkpoint_dir: str) -> dict:
    with torch.serialization.safe_globals(DETERMINED_CHECKPOINT_GLOBALS):
        return torch.load(os.path.join(checkpoint_dir, "state_dict.pth"), map_location="cpu", weights_only=True)


def _weights(state: dict) -> dict[str, torch.Tensor]:
    (model,) = state["models_state_dict"]
    return {name: value.double() for name, value in model.items() if value.is_floating_point()}


def test_two_accumulated_batches_of_4_train_like_one_batch_of_8(tmp_path):
    large = _train(tmp_path, "batch8", global_batch_size=8, aggregation_frequency=1)
    accumulated = _train(tmp_path, "batch4x2", global_batch_size=4, aggregation_frequency=2)

    # The LR schedule counts epochs, not batches: a drop (lr_drop: 1) after each of the 2 epochs in both runs.
    for run in (large, accumulated):
        assert run["end"]["lr_schedulers_state_dict"][0]["last_epoch"] == 2
        lrs = {group["name"]: group["lr"] for group in run["end"]["optimizers_state_dict"][0]["param_groups"]}
        assert lrs["rest"] == pytest.approx(HPARAMS["lr"] / 100)

    half_large, end_large = _weights(large["half"]), _weights(large["end"])
    half_acc, end_acc = _weights(accumulated["half"]), _weights(accumulated["end"])
    assert end_large.keys() == end_acc.keys()
    trained = 0
    for name, end in end_large.items():
        # What the last two steps changed sets the scale: the runs must agree 1000x more closely, give or
        # take the float32 rounding of the weights themselves.
        update = (end - half_large[name]).abs().max().item()
        rounding = 4 * torch.finfo(torch.float32).eps * end.abs().max().item()
        for label, a, b in (("after 2 steps", half_large[name], half_acc[name]), ("after 4 steps", end, end_acc[name])):
            difference = (a - b).abs().max().item()
            assert difference <= 1e-3 * update + rounding, (
                f"{name} {label}: differs by {difference:.3g}; the last two steps moved it by {update:.3g}")
        trained += update > 0
    assert trained > 50  # the comparison covers the trained weights, not only frozen ones

    # The chief's reports: the same number of optimizer steps' worth of images, batch for batch.
    assert [r["batch"] for r in large["metrics"] if r["kind"] == "train"] == [2, 4]
    assert [r["batch"] for r in accumulated["metrics"] if r["kind"] == "train"] == [4, 8]
