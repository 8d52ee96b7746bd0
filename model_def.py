"""Deformable DETR as a Determined `PyTorchTrial`, and the script that trains it.

    python3 model_def.py const_fake.yaml                        # locally, no cluster
    torchrun --standalone --nproc_per_node 2 model_def.py X.yaml  # several local processes (gloo on CPU)
    entrypoint: python3 -m determined.launch.torch_distributed python3 model_def.py X.yaml  # on a cluster
"""

import argparse
import logging
import os
import sys

import determined as det
import torch

from deformable_detr.config.experiment import ExperimentSettings, load_experiment_config, parse_hyperparameters
from deformable_detr.config.run import Period
from deformable_detr.inference.checkpoint_files import latest_complete_checkpoint, steps_completed
from deformable_detr.training.determined_compat import (
    allow_determined_rng_state,
    quiet_local_core_log,
    set_random_seeds,
    use_local_checkpoint,
)
from deformable_detr.training.trial import DeformableDETRTrial, train_unit

__all__ = ["DeformableDETRTrial", "main", "positive_int"]

logger = logging.getLogger("deformable_detr")


# ---------------------------------------------------------------------------------------- the script
def positive_int(text: str) -> int:
    """An argparse type: an integer > 0 (a run of 0 batches would do nothing and look successful)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="experiment config (YAML); on a cluster the master's copy is used")
    parser.add_argument(
        "--max-batches", type=positive_int, help="train this many batches instead of the configured length"
    )
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
    settings = None
    if on_cluster:
        # The master's hyperparameter sample; det.pytorch.init reads the master's copy of the config, sets up
        # torch.distributed (the launcher's env) and seeds every generator with the trial seed.
        exp_conf, hparams, distributed = None, info.trial.hparams, None
        latest_checkpoint, skip_batches = info.latest_checkpoint, 0
        logger.info(
            "trial %d of experiment %d on the cluster: trial seed %d, %s",
            info.trial.trial_id,
            info.trial.experiment_id,
            info.trial.trial_seed,
            f"resuming from checkpoint {latest_checkpoint}" if latest_checkpoint else "starting fresh",
        )
    else:
        exp_conf, hparams = load_experiment_config(args.config, args.overrides)
        quiet_local_core_log(args.metrics_file)
        if args.checkpoint_dir:
            # Determined's local mode stores checkpoints under $XDG_DATA_HOME/determined.
            os.environ["XDG_DATA_HOME"] = os.path.abspath(args.checkpoint_dir)
        distributed = _distributed_context()
        latest_checkpoint, skip_batches = None, 0
        if args.resume:
            resume_from = latest_complete_checkpoint(args.resume)  # verified; JSON only, nothing unpickled
            logger.info("resuming from %s", resume_from)
            latest_checkpoint = use_local_checkpoint(resume_from, args.checkpoint_dir)
            skip_batches = steps_completed(resume_from)
        settings = ExperimentSettings.from_config(exp_conf, hparams)
        set_random_seeds(settings.experiment_seed)
    # Needed before init: the context wraps the optimizer with it (gradient accumulation).
    optimization = settings.optimization if settings is not None else parse_hyperparameters(hparams)[1]
    aggregation_frequency = optimization.aggregation_frequency
    if aggregation_frequency > 1:
        logger.info("gradient accumulation: one optimizer step every %d batches", aggregation_frequency)

    with det.pytorch.init(
        hparams=hparams, exp_conf=exp_conf, distributed=distributed, aggregation_frequency=aggregation_frequency
    ) as context:
        if settings is None:
            settings = ExperimentSettings.from_config(context.get_experiment_config(), hparams)
        max_length = train_unit(
            Period("batches", args.max_batches) if args.max_batches is not None else settings.length
        )
        trial = DeformableDETRTrial(
            context, settings, skip_batches=skip_batches, max_length=max_length, metrics_file=args.metrics_file
        )
        trainer = det.pytorch.Trainer(trial, context)
        run = settings.run
        trainer.fit(
            max_length=max_length,
            validation_period=train_unit(run.validation_period),
            checkpoint_period=train_unit(run.checkpoint_period),
            reporting_period=train_unit(run.reporting_period),
            # "best" (the default) needs the master; local mode falls back to "all" with a warning.
            checkpoint_policy="best" if on_cluster else "all",
            latest_checkpoint=latest_checkpoint,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
