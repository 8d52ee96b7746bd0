"""The authors' optimisation: three parameter groups, AdamW/SGD, the step schedule, checked settings; the
warm-up and cosine schedules."""

import math

import pytest
import torch

import model as detr_model
from deformable_detr.config.experiment import parse_hyperparameters
from deformable_detr.config.optim import OptimizationSettings
from deformable_detr.training.optim import build_lr_scheduler, build_optimizer, build_param_groups
from trial_runs import TINY_MODEL


@pytest.fixture(scope="module")
def tiny_model():
    model, _, _ = detr_model.build_model({**TINY_MODEL, "lr_backbone": 1e-5})
    return model


def test_param_groups_split_backbone_linear_projections_and_the_rest(tiny_model):
    settings = OptimizationSettings(lr=1e-4, lr_backbone=1e-5, lr_linear_proj_mult=0.1)
    rest, backbone, linear_proj = build_param_groups(tiny_model, settings)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    assert backbone["lr"] == 1e-5 and linear_proj["lr"] == pytest.approx(1e-5) and rest["lr"] == 1e-4
    assert backbone["params"] and all(names[id(p)].startswith("backbone.0.") for p in backbone["params"])
    assert linear_proj["params"]
    assert all("sampling_offsets" in names[id(p)] or "reference_points" in names[id(p)] for p in linear_proj["params"])
    assert not any("sampling_offsets" in names[id(p)] or names[id(p)].startswith("backbone.0.") for p in rest["params"])
    trainable = [p for p in tiny_model.parameters() if p.requires_grad]
    assert len(rest["params"]) + len(backbone["params"]) + len(linear_proj["params"]) == len(trainable)


def test_frozen_backbone_leaves_its_group_empty():
    model, _, _ = detr_model.build_model({**TINY_MODEL, "lr_backbone": 0})
    groups = build_param_groups(model, OptimizationSettings(lr_backbone=0.0))
    assert groups[1]["params"] == [] and [g["name"] for g in groups] == ["rest", "backbone", "linear_proj"]


def test_optimizer_choice_and_step_schedule(tiny_model):
    adamw = build_optimizer(tiny_model, OptimizationSettings(weight_decay=1e-4))
    sgd = build_optimizer(tiny_model, OptimizationSettings(sgd=True))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 1e-4
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    scheduler = build_lr_scheduler(adamw, OptimizationSettings(lr=1e-3, lr_drop=2), lambda: 1)
    lrs = []
    for _ in range(4):
        lrs.append(adamw.param_groups[0]["lr"])
        adamw.step()
        scheduler.step()
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-5, 2e-5])
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)  # the authors' scheduler, state and all


def _lrs_per_batch(model, settings, batches_per_epoch, batches):
    optimizer = build_optimizer(model, settings)
    scheduler = build_lr_scheduler(optimizer, settings, lambda: batches_per_epoch)
    lrs = []
    for _ in range(batches):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero_at_the_last_epoch(tiny_model):
    settings = OptimizationSettings(lr=1e-3, lr_backbone=1e-4, lr_schedule="cosine", warmup_batches=4, epochs=2)
    lrs = _lrs_per_batch(tiny_model, settings, batches_per_epoch=10, batches=21)
    rest = [lr[0] for lr in lrs]
    for step in range(20):
        warmup = min(1.0, (step + 1) / 4)
        assert rest[step] == pytest.approx(1e-3 * warmup * 0.5 * (1 + math.cos(math.pi * step / 20)))
    assert rest[0] == pytest.approx(2.5e-4) and rest[3] < 1e-3
    assert rest[20] == 0.0  # past the run's length the rate stays at 0
    # every group follows the same factor
    assert [lr[1] / lr[0] for lr in lrs[:20]] == pytest.approx([0.1] * 20)
    assert [lr[2] / lr[0] for lr in lrs[:20]] == pytest.approx([0.1] * 20)


def test_warmup_before_the_step_schedule_keeps_the_tenfold_drop_at_lr_drop_epochs(tiny_model):
    settings = OptimizationSettings(lr=1e-3, lr_drop=1, warmup_batches=2, epochs=2)
    rest = [lr[0] for lr in _lrs_per_batch(tiny_model, settings, batches_per_epoch=3, batches=6)]
    assert rest == pytest.approx([5e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4])


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"lr": "fast"}, "'lr' must be a number"),
        ({"lr_drop": 0}, "'lr_drop' must be a positive integer"),
        ({"sgd": 1}, "'sgd' must be true or false"),
        ({"amp": "fp8"}, "'amp' must be one of"),
        ({"lr_schedule": "linear"}, "'lr_schedule' must be one of"),
        ({"warmup_batches": -1}, "'warmup_batches' must be an integer >= 0"),
        ({"lr_drop": True}, "'lr_drop' must be an integer"),
        ({"lr_linear_proj_names": ["a", 1]}, "must be a list of strings"),
        ({"lr_backbone_names": "backbone.0"}, "must be a list of strings"),
    ],
)
def test_bad_optimisation_settings_name_the_key(hparams, message):
    with pytest.raises(ValueError, match=message):
        parse_hyperparameters(hparams)


@pytest.mark.parametrize("sgd", [False, True])
def test_fused_optimizer_takes_the_same_step_up_to_rounding(tiny_model, sgd):
    """fused_optimizer changes how the step is computed, not what it computes."""
    steps = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model, _, _ = detr_model.build_model({**TINY_MODEL, "lr_backbone": 1e-5})
        optimizer = build_optimizer(model, OptimizationSettings(sgd=sgd, fused_optimizer=fused))
        assert optimizer.defaults["fused"] is (True if fused else None)
        for parameter in model.parameters():
            parameter.grad = torch.full_like(parameter, 0.01)
        before = [parameter.detach().clone() for parameter in model.parameters()]
        optimizer.step()
        steps[fused] = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert steps[False].abs().max() > 0
    torch.testing.assert_close(steps[True], steps[False], rtol=1e-5, atol=1e-6 * steps[False].abs().max().item())
