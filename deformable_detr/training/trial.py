"""Deformable DETR as a Determined `PyTorchTrial`: the authors' optimisation, COCO bbox mAP, visible progress
and self-contained checkpoints."""

import dataclasses
import logging
from typing import Any

import determined as det
import torch
from determined import pytorch

from deformable_detr.config.experiment import ExperimentSettings
from deformable_detr.config.run import Period
from deformable_detr.data.batching import collate_fn
from deformable_detr.data.build import build_dataset
from deformable_detr.data.labels import fit_num_classes
from deformable_detr.data.sampling import EpochShuffleBatchSampler, PerSampleSeededDataset, mix_seed
from deformable_detr.models.build import build_model
from deformable_detr.models.denoising import DenoisingQueries, training_queries
from deformable_detr.training.checkpoints import CheckpointMetadataWriter, make_metadata
from deformable_detr.training.coco_eval import CocoDetectionReducer
from deformable_detr.training.determined_compat import direct_checkpoint_storage, exit_after_checkpoint
from deformable_detr.training.distributed import average_num_boxes
from deformable_detr.training.optim import build_lr_scheduler, build_optimizer
from deformable_detr.training.precision import resolve_amp
from deformable_detr.training.progress import ProgressLogger
from deformable_detr.training.steps import autocast, check_finite_loss, check_finite_outputs, step_losses, to_float32
from deformable_detr.training.validation_guard import (
    FailedBatch,
    GuardedDataset,
    ValidationFailedError,
    guarded_collate,
)
from deformable_detr.training.warm_start import load_pretrained, resolve_warm_start

logger = logging.getLogger("deformable_detr")

TRAIN_UNITS = {"batches": pytorch.Batch, "epochs": pytorch.Epoch}


def train_unit(period: Period) -> pytorch.TrainUnit:
    """A settings period as Determined's Batch(n) or Epoch(n)."""
    return TRAIN_UNITS[period.unit](period.length)


class DeformableDETRTrial(pytorch.PyTorchTrial):
    """Trains Deformable DETR with the authors' optimisation and reports COCO bbox mAP.

    Args:
        context: Determined's trial context (hyperparameters, `data:` section, devices).
        settings: the experiment's settings, when the script has parsed them already; else they are read from
            the context.
        skip_batches: training batches already done by the checkpoint a local run resumes from (on a
            cluster, Determined skips them itself).
        max_length: the run's length, for the time-left estimate in the log.
        metrics_file: the chief appends every training and validation report to it (JSON lines).
    """

    def __init__(
        self,
        context: pytorch.PyTorchTrialContext,
        settings: ExperimentSettings | None = None,
        skip_batches: int = 0,
        max_length: pytorch.TrainUnit | None = None,
        metrics_file: str | None = None,
    ) -> None:
        self.context = context
        if settings is None:
            settings = ExperimentSettings.from_config(context.get_experiment_config(), context.get_hparams())
        self.settings = settings
        self.seed = _trial_seed(context, settings)
        self.skip_batches = skip_batches
        self.max_length = max_length
        self.metrics_file = metrics_file if context.distributed.get_rank() == 0 else None
        self.batches_per_epoch: int | None = None
        self.validation_failure: str | None = None  # set when validation stopped the run (see evaluate_batch)
        self._accumulated_boxes = 0.0  # box count of the batches accumulated since the last optimizer step

        # The training split first: its categories size the model (num_classes: auto) and label the val split.
        self.train_dataset = build_dataset("train", settings.data)
        hparams = fit_num_classes(settings.hparams, self.train_dataset.label_space)
        settings = self.settings = dataclasses.replace(
            settings, hparams=hparams, model=dataclasses.replace(settings.model, num_classes=hparams["num_classes"])
        )
        model, criterion, postprocessors = build_model(settings.hparams)
        if settings.run.warm_start:
            load_pretrained(model, resolve_warm_start(settings.run.warm_start), logger)
        optimization = settings.optimization
        self.amp = resolve_amp(optimization.amp, context.device)  # "off", "bf16" or "fp16"
        self.scaler = None
        if self.amp == "fp16":
            self.scaler = context.wrap_scaler(torch.amp.GradScaler(context.device.type))
        self.model = context.wrap_model(model)
        self.criterion = criterion.to(context.device)
        self.postprocessors = postprocessors
        self.optimizer = context.wrap_optimizer(build_optimizer(model, optimization))
        # Stepped by train_batch (at each epoch end, or after every batch for warm-up and cosine):
        # Determined's own epoch count restarts at 0 when a local run resumes, ours does not.
        self.lr_scheduler = context.wrap_lr_scheduler(
            build_lr_scheduler(self.optimizer, optimization, lambda: self.batches_per_epoch),
            step_mode=pytorch.LRScheduler.StepMode.MANUAL_STEP,
        )

        self.val_dataset = build_dataset("val", settings.data, self.train_dataset.label_space)
        self.coco_reducer = context.wrap_reducer(
            CocoDetectionReducer(self.val_dataset.coco, self.val_dataset.label_to_cat_id, settings.run.coco_evaluator),
            for_training=False,
        )

    # ----------------------------------------------------------------------------------------- data
    def build_training_data_loader(self) -> pytorch.DataLoader:
        dataset = PerSampleSeededDataset(self.train_dataset, self.seed)
        batch_sampler = EpochShuffleBatchSampler(
            len(dataset), self.context.get_per_slot_batch_size(), seed=self.seed, skip_batches=self.skip_batches
        )
        # Determined's epoch: the chief's share of the batches, rounded up.
        self.batches_per_epoch = -(-len(batch_sampler) // self.context.distributed.get_size())
        num_workers = self.settings.data.num_workers
        return pytorch.DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            persistent_workers=num_workers > 0,
        )

    def build_validation_data_loader(self) -> pytorch.DataLoader:
        return pytorch.DataLoader(
            GuardedDataset(self.val_dataset),  # an unreadable item reaches evaluate_batch as a FailedBatch
            batch_size=self.context.get_per_slot_batch_size(),
            shuffle=False,
            num_workers=self.settings.data.num_workers,
            collate_fn=guarded_collate(collate_fn),
        )

    # ------------------------------------------------------------------------------------ training
    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        # batch_idx restarts at 0 when a local run resumes; on a cluster skip_batches is 0.
        global_batch = batch_idx + self.skip_batches
        where = f"training batch {global_batch} (epoch {global_batch // self.batches_per_epoch})"
        images, mask, targets = batch
        denoising = self._denoising_queries(targets, global_batch)
        with autocast(self.context.device.type, self.amp):
            outputs = self.model(images, mask, denoising)
        check_finite_outputs(outputs, where)
        loss, terms = step_losses(self.criterion, outputs, targets)
        check_finite_loss(loss, terms, where)
        self._optimizer_step(loss, targets)
        if self.settings.optimization.per_batch_schedule or (global_batch + 1) % self.batches_per_epoch == 0:
            self.lr_scheduler.step()
        metrics = {"loss": loss.item(), **{name: value.item() for name, value in terms.items()}}
        for group in self.optimizer.param_groups:
            metrics[f"lr_{group['name']}"] = group["lr"]
        return metrics

    def _denoising_queries(self, targets: list[dict], global_batch: int) -> DenoisingQueries | None:
        """The step's noised targets (query denoising), drawn from (seed, rank, step) alone: a resumed run draws
        the same."""
        generator = torch.Generator().manual_seed(
            mix_seed(mix_seed(self.seed, self.context.distributed.get_rank()), global_batch) % 2**63
        )
        return training_queries(targets, self.settings.model, generator)

    def _optimizer_step(self, loss: torch.Tensor, targets: list[dict]) -> None:
        """Backward, then (every `aggregation_frequency` batches) gradient clipping (`clip_max_norm` > 0) and the
        optimizer step; under fp16 the loss is scaled and the gradients unscaled before clipping.

        The authors' loss divides by the batch's box count (averaged over workers). With gradient accumulation
        a step must divide by the count of all its batches, as one batch of `global_batch_size *
        aggregation_frequency` images would: each batch back-propagates its loss times its count (the loss
        summed over its boxes), and the accumulated gradient is rescaled once, before clipping and the step.
        """
        optimization = self.settings.optimization
        frequency, clip = optimization.aggregation_frequency, optimization.clip_max_norm
        if frequency > 1:
            num_boxes = average_num_boxes(sum(len(target["labels"]) for target in targets), loss.device)
            self._accumulated_boxes += num_boxes
            loss = loss * num_boxes
        self.context.backward(self.scaler.scale(loss) if self.scaler is not None else loss)
        stepped = False

        def before_step(params: list[torch.nn.Parameter]) -> None:
            # Determined calls this only on the batch that steps, after averaging the accumulated gradients.
            nonlocal stepped
            stepped = True
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if frequency > 1:
                scale = frequency / self._accumulated_boxes
                for param in params:
                    if param.grad is not None:
                        param.grad.mul_(scale)
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)

        needs_hook = frequency > 1 or clip > 0 or self.scaler is not None
        self.context.step_optimizer(self.optimizer, clip_grads=before_step if needs_hook else None, scaler=self.scaler)
        if stepped:
            self._accumulated_boxes = 0.0
            if self.scaler is not None:
                self.scaler.update()

    def evaluate_batch(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        if isinstance(batch, FailedBatch):
            self._stop_on_validation_failure(batch, batch_idx)
        images, mask, targets = batch
        with autocast(self.context.device.type, self.amp):
            outputs = self.model(images, mask)
        # Determined gives the workers whole batches in turn, so one may validate a batch more than another.
        loss, terms = step_losses(self.criterion, outputs, targets, across_workers=False)
        orig_sizes = torch.stack([target["orig_size"] for target in targets])
        detections = self.postprocessors["bbox"](to_float32(outputs), orig_sizes)
        self.coco_reducer.update([int(target["image_id"]) for target in targets], detections)
        return {"loss": loss.item(), **{name: value.item() for name, value in terms.items()}}

    def get_batch_length(self, batch: Any) -> int:
        return 0 if isinstance(batch, FailedBatch) else super().get_batch_length(batch)

    def _stop_on_validation_failure(self, batch: FailedBatch, batch_idx: int) -> None:
        """Stop the run through Determined's exit path, which writes the checkpoint first; the failure is
        raised at shutdown (`ValidationFailureReporter`). With several workers the others are still
        validating and cannot join a checkpoint, so the error is raised at once."""
        for item in batch.errors:
            logger.error("validation item %d could not be read:\n%s", item.index, item.traceback)
        first = batch.errors[0]
        self.validation_failure = f"validation batch {batch_idx}, item {first.index}: {first.error}"
        if self.context.distributed.get_size() > 1:
            raise ValidationFailedError(f"{self.validation_failure} (no checkpoint written: several workers)")
        raise exit_after_checkpoint()

    def build_callbacks(self) -> dict[str, pytorch.PyTorchCallback]:
        metadata = make_metadata(
            self.settings.hparams,
            self.settings.data_section,
            self.val_dataset.label_to_cat_id,
            self.val_dataset.label_space.names,
        )
        progress = ProgressLogger(
            self.context.get_global_batch_size(),
            self._total_batches,
            self.skip_batches,
            self.metrics_file,
            chief=self.context.distributed.get_rank() == 0,
        )
        writer = CheckpointMetadataWriter(
            metadata,
            storage_dir=direct_checkpoint_storage(self.context),
            keep=None if _on_cluster() else self.settings.run.keep_checkpoints,  # the cluster's own GC governs
            is_chief=self.context.distributed.get_rank() == 0,
        )
        return {
            "progress": progress,
            "metadata": writer,
            "validation_failure": ValidationFailureReporter(self, writer),
        }

    def _total_batches(self) -> int | None:
        if isinstance(self.max_length, pytorch.Batch):
            return self.max_length.value
        if isinstance(self.max_length, pytorch.Epoch) and self.batches_per_epoch:
            return self.max_length.value * self.batches_per_epoch
        return None


class ValidationFailureReporter(pytorch.PyTorchCallback):
    """Raises the validation failure that stopped the trial once Determined has written the checkpoint and
    shut the trial down, naming that checkpoint."""

    def __init__(self, trial: DeformableDETRTrial, writer: CheckpointMetadataWriter) -> None:
        self.trial = trial
        self.writer = writer

    def on_trial_shutdown(self) -> None:
        if self.trial.validation_failure is not None:
            raise ValidationFailedError(
                f"{self.trial.validation_failure}; the checkpoint was written before stopping: "
                f"{self.writer.last_checkpoint or 'none (this run wrote no checkpoint)'}"
            )


def _on_cluster() -> bool:
    info = det.get_cluster_info()
    return info is not None and info.task_type == "TRIAL"


def _trial_seed(context: pytorch.PyTorchTrialContext, settings: ExperimentSettings) -> int:
    # On a cluster the master gives each trial its seed; locally it comes from the config.
    info = det.get_cluster_info()
    if info is not None and info.task_type == "TRIAL":
        return context.get_trial_seed()
    return settings.experiment_seed
