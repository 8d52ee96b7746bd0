"""The optimisation settings the trial owns: `OptimizationSettings` (learning rates, optimizer, schedule,
clipping, batch size, length, mixed precision), read from the experiment's hyperparameters."""

import dataclasses

from deformable_detr.config.parsing import HYPERPARAMETERS, require, require_choice

AMP_MODES = ("off", "bf16", "fp16", "auto")
LR_SCHEDULES = ("step", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizationSettings:
    """The authors' optimisation; the defaults are those of their command line.

    lr: learning rate of everything but the backbone and the linear projections. lr_backbone: the backbone's
    (0 freezes it). lr_backbone_names / lr_linear_proj_names: parameter-name fragments of those groups;
    lr_linear_proj_mult: the projections' factor on lr. weight_decay. sgd: SGD with momentum instead of AdamW.
    lr_schedule: "step" (the authors': the learning rates drop tenfold after `lr_drop` epochs) or "cosine" (they
    decay along half a cosine, batch by batch, to 0 at the end of `epochs`). warmup_batches: the learning rates
    rise linearly over the first warmup_batches batches (0: none, as the authors').
    lr_drop: epochs before the learning rates drop tenfold (step schedule). clip_max_norm: gradient clipping (0: none).
    global_batch_size: images per batch over all workers. aggregation_frequency: batches whose gradients are
    accumulated into one optimizer step (Determined's gradient aggregation): a step sees
    global_batch_size * aggregation_frequency images. epochs: the run's length when the searcher sets none.
    amp: mixed precision, "off", "bf16", "fp16" or "auto" (bf16 where the device computes in bfloat16 natively:
    a GPU of compute capability 8.0+, a CPU with AVX512_BF16 or AMX; else off). fused_optimizer: the optimizer's
    fused kernel (one pass over every parameter instead of one per tensor; equal up to float rounding, about 2x
    faster on the CPU's small tensors); off by default, as the authors'.
    """

    lr: float = 2e-4
    lr_backbone: float = 2e-5
    lr_backbone_names: tuple[str, ...] = ("backbone.0",)
    lr_linear_proj_names: tuple[str, ...] = ("reference_points", "sampling_offsets")
    lr_linear_proj_mult: float = 0.1
    weight_decay: float = 1e-4
    sgd: bool = False
    lr_schedule: str = "step"
    warmup_batches: int = 0
    lr_drop: int = 40
    clip_max_norm: float = 0.1
    global_batch_size: int = 32
    aggregation_frequency: int = 1
    epochs: int = 50
    amp: str = "off"
    fused_optimizer: bool = False

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "warmup_batches":
                require(HYPERPARAMETERS, field.name, value >= 0, f"must be an integer >= 0, got {value!r}")
            elif field.type is int:
                require(HYPERPARAMETERS, field.name, value >= 1, f"must be a positive integer, got {value!r}")
            elif field.type is float:
                require(HYPERPARAMETERS, field.name, value >= 0, f"must be a number >= 0, got {value!r}")
        require_choice(HYPERPARAMETERS, "amp", self.amp, AMP_MODES)
        require_choice(HYPERPARAMETERS, "lr_schedule", self.lr_schedule, LR_SCHEDULES)

    @property
    def per_batch_schedule(self) -> bool:
        """Whether the learning rates change at every optimizer step (warm-up or cosine), not once per epoch."""
        return self.lr_schedule != "step" or self.warmup_batches > 0

    @property
    def train_backbone(self) -> bool:
        """The backbone trains only with a learning rate of its own."""
        return self.lr_backbone > 0
