"""The authors' optimisation settings: parameter groups, optimizer, LR schedule, gradient clipping."""

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

AMP_MODES = ("off", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class OptimizationSettings:
    """Hyperparameters the trial owns (the model's own are validated by `deformable_detr.config.model`)."""

    lr: float = 2e-4
    lr_backbone: float = 2e-5
    lr_backbone_names: tuple[str, ...] = ("backbone.0",)
    lr_linear_proj_names: tuple[str, ...] = ("reference_points", "sampling_offsets")
    lr_linear_proj_mult: float = 0.1
    weight_decay: float = 1e-4
    sgd: bool = False
    lr_drop: int = 40
    clip_max_norm: float = 0.1
    global_batch_size: int = 32
    epochs: int = 50
    amp: str = "off"

    @classmethod
    def from_hparams(cls, hparams: Mapping) -> "OptimizationSettings":
        """Reads the trial's keys from the experiment's hyperparameters (other keys are the model's)."""
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in hparams:
                continue
            value = hparams[field.name]
            if field.name in ("lr_backbone_names", "lr_linear_proj_names"):
                if isinstance(value, str) or not isinstance(value, Sequence):
                    raise ValueError(f"hyperparameter {field.name!r} must be a list of strings, got {value!r}")
                value = tuple(str(v) for v in value)
            elif field.type is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"hyperparameter {field.name!r} must be true or false, got {value!r}")
            elif field.type is int:
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"hyperparameter {field.name!r} must be a positive integer, got {value!r}")
            elif field.type is float:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"hyperparameter {field.name!r} must be a number >= 0, got {value!r}")
                value = float(value)
            values[field.name] = value
        settings = cls(**values)
        if settings.amp not in AMP_MODES:
            raise ValueError(f"hyperparameter 'amp' must be one of {AMP_MODES}, got {settings.amp!r}")
        return settings


TRIAL_HPARAM_KEYS = frozenset(field.name for field in dataclasses.fields(OptimizationSettings))


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
    """AdamW (or SGD with momentum 0.9 when `sgd`) over `build_param_groups`."""
    groups = build_param_groups(model, settings)
    if settings.sgd:
        return torch.optim.SGD(groups, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, settings: OptimizationSettings):
    """Divide every learning rate by 10 after `lr_drop` epochs (stepped once per epoch)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_drop)
