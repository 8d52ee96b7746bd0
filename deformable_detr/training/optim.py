"""The authors' optimisation: parameter groups, optimizer and LR schedule, built from `OptimizationSettings`."""

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from deformable_detr.config.optim import OptimizationSettings


def _matches(name: str, keywords: Sequence[str]) -> bool:
    return any(keyword in name for keyword in keywords)


def build_param_groups(model: nn.Module, settings: OptimizationSettings) -> list[dict]:
    """Three groups, as the authors': the rest at `lr`, the backbone at `lr_backbone`, and the
    sampling-offset / reference-point projections at `lr * lr_linear_proj_mult`.

    Groups keep their order even when empty, so checkpoints line up across settings.
    """
    rest, backbone, linear_proj = [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if _matches(name, settings.lr_backbone_names):
            backbone.append(parameter)
        elif _matches(name, settings.lr_linear_proj_names):
            linear_proj.append(parameter)
        else:
            rest.append(parameter)
    return [
        {"params": rest, "lr": settings.lr, "name": "rest"},
        {"params": backbone, "lr": settings.lr_backbone, "name": "backbone"},
        {"params": linear_proj, "lr": settings.lr * settings.lr_linear_proj_mult, "name": "linear_proj"},
    ]


def build_optimizer(model: nn.Module, settings: OptimizationSettings) -> torch.optim.Optimizer:
    """AdamW (or SGD with momentum 0.9 when `sgd`) over `build_param_groups`, fused when `fused_optimizer`."""
    groups = build_param_groups(model, settings)
    # None leaves the choice to torch (its foreach implementation), as the authors' runs did.
    fused = True if settings.fused_optimizer else None
    if settings.sgd:
        return torch.optim.SGD(groups, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, fused=fused)
    return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, settings: OptimizationSettings, batches_per_epoch: Callable[[], int]
) -> torch.optim.lr_scheduler.LRScheduler:
    """The authors' schedule, every learning rate divided by 10 after `lr_drop` epochs (a StepLR stepped once per
    epoch), unless `settings.per_batch_schedule`: then a LambdaLR stepped after every batch with `lr_factor` (with
    gradient aggregation, the optimizer uses the factor of the batch it steps on). `batches_per_epoch` is called
    from the first step on: the data loader that knows it is built after the scheduler."""
    if not settings.per_batch_schedule:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_drop)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, settings, batches_per_epoch() if step else 1)
    )


def lr_factor(step: int, settings: OptimizationSettings, batches_per_epoch: int) -> float:
    """The learning rates' factor at batch `step` (0-based): a linear warm-up over `warmup_batches` batches, times
    the step drop (0.1 after `lr_drop` epochs) or the cosine decay to 0 at the end of `epochs`."""
    warmup = min(1.0, (step + 1) / settings.warmup_batches) if settings.warmup_batches else 1.0
    if settings.lr_schedule == "cosine":
        total = settings.epochs * batches_per_epoch
        return warmup * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    return warmup * 0.1 ** (step // (settings.lr_drop * batches_per_epoch))
