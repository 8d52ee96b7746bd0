"""The loss of a training or validation step, as the trial computes it: the model's outputs cast to float32
(whatever the autocast dtype), the criterion's terms and their weighted total. `benchmarks/bench_train_step.py`
times the same function."""

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

from deformable_detr.models.criterion import SetCriterion

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, amp: str) -> contextlib.AbstractContextManager:
    """Autocast to the `amp` dtype ("bf16" or "fp16"), or nothing for "off"."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AUTOCAST_DTYPES[amp])


def to_float32(outputs: Any) -> Any:
    """Every floating-point tensor of a nest of dicts, lists and tuples in float32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, Mapping):
        return {key: to_float32(value) for key, value in outputs.items()}
    if isinstance(outputs, list | tuple):
        return type(outputs)(to_float32(value) for value in outputs)
    return outputs


def step_losses(
    criterion: SetCriterion, outputs: dict, targets: list[dict], across_workers: bool = True
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(the weighted total loss, every loss term), computed in float32; `across_workers` as in SetCriterion."""
    terms = criterion(to_float32(outputs), targets, across_workers)
    return criterion.total_loss(terms), terms


def check_finite_outputs(outputs: dict, where: str) -> None:
    """FloatingPointError naming the output and `where` (e.g. 'training batch 9 (epoch 4)') at a NaN or inf."""
    for name in ("pred_logits", "pred_boxes"):
        finite = torch.isfinite(outputs[name])
        if not finite.all():
            raise FloatingPointError(
                f"non-finite model output {name} at {where}: "
                f"{int((~finite).sum())} of {outputs[name].numel()} values"
            )


def check_finite_loss(loss: torch.Tensor, terms: dict[str, torch.Tensor], where: str) -> None:
    """FloatingPointError with every loss term when the total is NaN or inf."""
    if not torch.isfinite(loss):
        values = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
        raise FloatingPointError(f"non-finite loss {loss.item()} at {where}; loss terms: {values}")
