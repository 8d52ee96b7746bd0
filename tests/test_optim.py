"""The authors' optimisation: three parameter groups, AdamW/SGD, the step schedule, checked settings."""

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
    scheduler = build_lr_scheduler(adamw, OptimizationSettings(lr=1e-3, lr_drop=2))
    lrs = []
    for _ in range(4):
        lrs.append(adamw.param_groups[0]["lr"])
        adamw.step()
        scheduler.step()
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-5, 2e-5])


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"lr": "fast"}, "'lr' must be a number"),
        ({"lr_drop": 0}, "'lr_drop' must be a positive integer"),
        ({"sgd": 1}, "'sgd' must be true or false"),
        ({"amp": "fp8"}, "'amp' must be one of"),
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
