"""Deformable DETR as a Determined `PyTorchTrial`, and the script that trains it.

    python3 model_def.py const_fake.yaml                        # locally, no cluster
    torchrun --standalone --nproc_per_node 2 model_def.py X.yaml  # several local processes (gloo on CPU)
    entrypoint: python3 -m determined.launch.torch_distributed python3 model_def.py X.yaml  # on a cluster
"""

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import torch
import determined as det
from determined import pytorch

import data
import model as detr_model
from deformable_detr.training.checkpoints import CheckpointMetadataWriter, make_metadata
from deformable_detr.training.coco_eval import CocoDetectionReducer
from deformable_detr.training.optim import OptimizationSettings, build_lr_scheduler, build_optimizer
from deformable_detr.config.run import RunSettings, load_experiment_config, split_data_config
from deformable_detr.training.determined_compat import (
    allow_determined_rng_state,
    batches_trained_in_checkpoint,
    use_local_checkpoint,
)
from deformable_detr.training.progress import ProgressLogger
from deformable_detr.data.sampling import EpochShuffleBatchSampler, PerSampleSeededDataset
from deformable_detr.training.warm_start import load_pretrained

logger = logging.getLogger("deformable_detr")

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeformableDETRTrial(pytorch.PyTorchTrial):
    """Trains Deformable DETR with the authors' optimisation and reports COCO bbox mAP.

    Args:
        context: Determined's trial context (hyperparameters, `data:` section, devices).
        skip_batches: training batches already done by the checkpoint a local run resumes from (on a
            cluster, Determined skips them itself).
        max_length: the run's length, for the time-left estimate in the log.
        metrics_file: the chief appends every training and validation report to it (JSON lines).
    """

    def __init__(
        self,
        context: pytorch.PyTorchTrialContext,
        skip_batches: int = 0,
        max_length: pytorch.TrainUnit | None = None,
        metrics_file: str | None = None,
    ) -> None:
        self.context = context
        hparams = context.get_hparams()
        self.settings = OptimizationSettings.from_hparams(hparams)
        self.dataset_config, self.run = split_data_config(context.get_data_config())
        self.seed = _trial_seed(context)
        self.skip_batches = skip_batches
        self.max_length = max_length
        self.metrics_file = metrics_file if context.distributed.get_rank() == 0 else None
        self.hparams = hparams
        self.batches_per_epoch: int | None = None

        model, criterion, postprocessors = detr_model.build_model(hparams)
        if self.run.warm_start:
            load_pretrained(model, self.run.resolve_warm_start(), logger)
        self.scaler = None
        if self.settings.amp == "fp16":
            self.scaler = context.wrap_scaler(torch.amp.GradScaler(context.device.type))
        self.model = context.wrap_model(model)
        self.criterion = criterion.to(context.device)
        self.postprocessors = postprocessors
        self.optimizer = context.wrap_optimizer(build_optimizer(model, self.settings))
        # Stepped by train_batch at each epoch end: Determined's own epoch count restarts at 0 when a
        # local run resumes, ours does not.
        self.lr_scheduler = context.wrap_lr_scheduler(
            build_lr_scheduler(self.optimizer, self.settings),
            step_mode=pytorch.LRScheduler.StepMode.MANUAL_STEP,
        )

        self.val_dataset = data.build_dataset("val", self.dataset_config)
        self.coco_reducer = context.wrap_reducer(
            CocoDetectionReducer(self.val_dataset.coco, self.val_dataset.label_to_cat_id, self.run.coco_evaluator),
            for_training=False,
        )

    # ----------------------------------------------------------------------------------------- data
    def build_training_data_loader(self) -> pytorch.DataLoader:
        dataset = PerSampleSeededDataset(data.build_dataset("train", self.dataset_config), self.seed)
        batch_sampler = EpochShuffleBatchSampler(
            len(dataset), self.context.get_per_slot_batch_size(), seed=self.seed, skip_batches=self.skip_batches
        )
        # Determined's epoch: the chief's share of the batches, rounded up.
        self.batches_per_epoch = -(-len(batch_sampler) // self.context.distributed.get_size())
        return pytorch.DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=self.run.num_workers,
            collate_fn=data.collate_fn,
            persistent_workers=self.run.num_workers > 0,
        )

    def build_validation_data_loader(self) -> pytorch.DataLoader:
        return pytorch.DataLoader(
            self.val_dataset,
            batch_size=self.context.get_per_slot_batch_size(),
            shuffle=False,
            num_workers=self.run.num_workers,
            collate_fn=data.collate_fn,
        )

    # ------------------------------------------------------------------------------------ training
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.settings.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.context.device.type, dtype=AUTOCAST_DTYPES[self.settings.amp])

    def _losses(self, outputs: dict, targets: list[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and every term, computed in float32 whatever the autocast dtype."""
        outputs = _to_float32(outputs)
        terms = self.criterion(outputs, targets)
        weights = self.criterion.weight_dict
        total = sum(terms[name] * weights[name] for name in terms if name in weights)
        return total, terms

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        # batch_idx restarts at 0 when a local run resumes; on a cluster skip_batches is 0.
        global_batch = batch_idx + self.skip_batches
        epoch = global_batch // self.batches_per_epoch
        images, mask, targets = batch
        with self._autocast():
            outputs = self.model(images, mask)
        for name in ("pred_logits", "pred_boxes"):
            if not torch.isfinite(outputs[name]).all():
                raise FloatingPointError(
                    f"non-finite model output {name} at training batch {global_batch} (epoch {epoch}): "
                    f"{int((~torch.isfinite(outputs[name])).sum())} of {outputs[name].numel()} values"
                )
        loss, terms = self._losses(outputs, targets)
        if not torch.isfinite(loss):
            values = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at training batch {global_batch} (epoch {epoch}); "
                f"loss terms: {values}"
            )
        self.context.backward(loss)
        clip = self.settings.clip_max_norm
        self.context.step_optimizer(
            self.optimizer,
            clip_grads=(lambda params: torch.nn.utils.clip_grad_norm_(params, clip)) if clip > 0 else None,
            scaler=self.scaler,
        )
        if self.scaler is not None:
            self.scaler.update()
        if (global_batch + 1) % self.batches_per_epoch == 0:
            self.lr_scheduler.step()
        metrics = {"loss": loss.item(), **{name: value.item() for name, value in terms.items()}}
        for group in self.optimizer.param_groups:
            metrics[f"lr_{group['name']}"] = group["lr"]
        return metrics

    def evaluate_batch(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        images, mask, targets = batch
        with self._autocast():
            outputs = self.model(images, mask)
        loss, terms = self._losses(outputs, targets)
        orig_sizes = torch.stack([target["orig_size"] for target in targets])
        detections = self.postprocessors["bbox"](_to_float32(outputs), orig_sizes)
        self.coco_reducer.update([int(target["image_id"]) for target in targets], detections)
        return {"loss": loss.item(), **{name: value.item() for name, value in terms.items()}}

    def build_callbacks(self) -> dict[str, pytorch.PyTorchCallback]:
        categories = {cat["id"]: cat["name"] for cat in self.val_dataset.coco.loadCats(self.val_dataset.coco.getCatIds())}
        metadata = make_metadata(self.hparams, self.dataset_config, self.val_dataset.label_to_cat_id, categories)
        progress = ProgressLogger(
            self.context.get_global_batch_size(), self._total_batches, self.skip_batches, self.metrics_file
        )
        return {"progress": progress, "metadata": CheckpointMetadataWriter(metadata)}

    def _total_batches(self) -> int | None:
        if isinstance(self.max_length, pytorch.Batch):
            return self.max_length.value
        if isinstance(self.max_length, pytorch.Epoch) and self.batches_per_epoch:
            return self.max_length.value * self.batches_per_epoch
        return None


def _to_float32(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, Mapping):
        return {key: _to_float32(value) for key, value in outputs.items()}
    if isinstance(outputs, list | tuple):
        return type(outputs)(_to_float32(value) for value in outputs)
    return outputs


def _trial_seed(context: pytorch.PyTorchTrialContext) -> int:
    # On a cluster the master gives each trial its seed; locally it comes from the config.
    info = det.get_cluster_info()
    if info is not None and info.task_type == "TRIAL":
        return context.get_trial_seed()
    return int(context.get_experiment_config().get("reproducibility", {}).get("experiment_seed", 0))


# ---------------------------------------------------------------------------------------- the script
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="experiment config (YAML); on a cluster the master's copy is used")
    parser.add_argument("--max-batches", type=int, help="train this many batches instead of the configured length")
    parser.add_argument("--checkpoint-dir", help="where a local run keeps its checkpoints")
    parser.add_argument("--resume", help="a local run resumes from this checkpoint (a storage id or folder)")
    parser.add_argument("--overrides", help="JSON of hyperparameters to change for a local run")
    parser.add_argument("--metrics-file", help="append every training and validation report to this JSON-lines file")
    return parser.parse_args(argv)


def _distributed_context() -> det.core.DistributedContext | None:
    """A torch.distributed context when started by torchrun off-cluster (gloo on CPU, nccl on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    os.environ.setdefault("USE_TORCH_DISTRIBUTED", "1")  # Determined checks this to pick its backend
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return det.core.DistributedContext.from_torch_distributed()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    allow_determined_rng_state()  # Determined 0.38.1 cannot resume under torch >= 2.6 without it

    info = det.get_cluster_info()
    on_cluster = info is not None and info.task_type == "TRIAL"
    if on_cluster:
        exp_conf, hparams, distributed = info.trial._config, info.trial.hparams, None
        latest_checkpoint, skip_batches = info.latest_checkpoint, 0
    else:
        exp_conf, hparams = load_experiment_config(args.config, args.overrides)
        if args.checkpoint_dir:
            # Determined's local mode stores checkpoints under $XDG_DATA_HOME/determined.
            os.environ["XDG_DATA_HOME"] = os.path.abspath(args.checkpoint_dir)
        distributed = _distributed_context()
        latest_checkpoint, skip_batches = None, 0
        if args.resume:
            latest_checkpoint = use_local_checkpoint(args.resume, args.checkpoint_dir)
            skip_batches = batches_trained_in_checkpoint(args.resume)
        seed = int(exp_conf.get("reproducibility", {}).get("experiment_seed", 0))
        det.pytorch._trainer._set_random_seeds(seed)

    run = RunSettings.from_data_config(exp_conf.get("data", {}))
    settings = OptimizationSettings.from_hparams(hparams)
    max_length = run.max_length(exp_conf, settings, args.max_batches)

    with det.pytorch.init(hparams=hparams, exp_conf=exp_conf, distributed=distributed) as context:
        trial = DeformableDETRTrial(
            context, skip_batches=skip_batches, max_length=max_length, metrics_file=args.metrics_file
        )
        trainer = det.pytorch.Trainer(trial, context)
        trainer.fit(
            max_length=max_length,
            validation_period=run.validation_period,
            checkpoint_period=run.checkpoint_period,
            reporting_period=run.reporting_period,
            latest_checkpoint=latest_checkpoint,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
