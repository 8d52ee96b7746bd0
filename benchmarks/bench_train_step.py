"""Images/s of full training steps and where the time goes: data, forward, matching, loss, backward, optimizer.

    python benchmarks/bench_train_step.py                       # the main job's model on synthetic shapes (CPU)
    python benchmarks/bench_train_step.py --config distributed_gcs.yaml --device cuda --amp bf16 --fake
                                                                # the paper's model on generated images (GPU)

Each step is timed as the trial runs it: a batch from a DataLoader (decode, augment, pad), the model's
forward under the trial's autocast, the Hungarian matching of every decoder layer (timed with hooks on the
matcher), the rest of the trial's loss function (`deformable_detr.training.steps.step_losses`: the float32
cast, the criterion, the weighted total), backward, and clipping + the AdamW step. The first steps are
warm-up and not counted.
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
import model as detr_model  # noqa: E402
from deformable_detr.config.experiment import ExperimentSettings, load_experiment_config  # noqa: E402
from deformable_detr.config.optim import AMP_MODES  # noqa: E402
from deformable_detr.data import synthetic  # noqa: E402
from deformable_detr.data.labels import fit_num_classes  # noqa: E402
from deformable_detr.models.denoising import training_queries  # noqa: E402
from deformable_detr.training.optim import build_optimizer  # noqa: E402
from deformable_detr.training.precision import resolve_amp  # noqa: E402
from deformable_detr.training.steps import autocast, step_losses  # noqa: E402

PHASES = ("data", "forward", "matching", "loss", "backward", "optimizer")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu_synthetic.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=AMP_MODES, default="off")
    parser.add_argument("--fake", action="store_true", help="generated images in memory instead of the config's data")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="per-step batch (default: the config's global batch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    exp_conf, hparams = load_experiment_config(args.config)
    hparams["pretrained_backbone"] = False
    experiment = ExperimentSettings.from_config(exp_conf, hparams)
    settings = experiment.optimization
    dataset_config = experiment.data  # labels and the fake data's categories fit the model's num_classes
    workdir = tempfile.mkdtemp()
    if args.fake:
        dataset_config = dataclasses.replace(dataset_config, backend="fake", fake_length=256)
    elif experiment.data.backend == "local" and not os.path.isdir(experiment.data.data_dir):
        dataset_config = dataclasses.replace(dataset_config, data_dir=workdir)
        synthetic.main(["--out", workdir, "--train", "256", "--val", "0", "--size", "256"])
    batch_size = args.batch_size or settings.global_batch_size
    num_workers = 0 if args.fake else experiment.data.num_workers
    train_set = data.build_dataset("train", dataset_config)
    hparams = fit_num_classes(hparams, train_set.label_space)  # 'auto', or a clear error when too small
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=True,
        num_workers=num_workers, collate_fn=data.collate_fn, drop_last=True, persistent_workers=num_workers > 0,
    )
    model, criterion, _ = detr_model.build_model(hparams)
    model_settings = dataclasses.replace(experiment.model, num_classes=hparams["num_classes"])  # as the trial
    model.to(device).train()
    criterion.to(device)
    optimizer = build_optimizer(model, settings)
    amp = resolve_amp(args.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    totals: dict[str, float] = defaultdict(float)
    matching = {"start": 0.0, "seconds": 0.0}

    def before_matching(*_):
        synchronize(device)
        matching["start"] = time.perf_counter()

    def after_matching(*_):
        matching["seconds"] += time.perf_counter() - matching["start"]

    criterion.matcher.register_forward_pre_hook(before_matching)
    criterion.matcher.register_forward_hook(after_matching)

    batches = iter(loader)
    counted = 0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            totals.clear()
            matching["seconds"] = 0.0
        marks = [time.perf_counter()]
        try:
            images, mask, targets = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, mask, targets = next(batches)
        images, mask = images.to(device), mask.to(device)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        denoising = training_queries(targets, model_settings, torch.Generator().manual_seed(step))  # as the trial
        synchronize(device)
        marks.append(time.perf_counter())
        with autocast(device.type, amp):
            outputs = model(images, mask, denoising)
        synchronize(device)
        marks.append(time.perf_counter())
        matched_before = matching["seconds"]
        loss, _ = step_losses(criterion, outputs, targets)
        synchronize(device)
        marks.append(time.perf_counter())
        scaler.scale(loss).backward()
        synchronize(device)
        marks.append(time.perf_counter())
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_max_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        marks.append(time.perf_counter())
        step_matching = matching["seconds"] - matched_before
        totals["data"] += marks[1] - marks[0]
        totals["forward"] += marks[2] - marks[1]
        totals["matching"] += step_matching
        totals["loss"] += marks[3] - marks[2] - step_matching
        totals["backward"] += marks[4] - marks[3]
        totals["optimizer"] += marks[5] - marks[4]
        counted = step - args.warmup + 1

    total = sum(totals[phase] for phase in PHASES)
    kernel = "compiled kernel" if __import__("ops").kernel_available() else "reference"
    kernel += f" (DDETR_MSDA_IMPL={os.environ.get('DDETR_MSDA_IMPL', 'auto')})"
    amp_text = args.amp if args.amp == amp else f"{args.amp} -> {amp}"
    print(f"config {args.config} | device {device} | amp {amp_text} | batch {batch_size} | "
          f"{'fake' if args.fake else dataset_config.backend} data | attention: {kernel} | threads {args.threads}")
    print(f"{counted} steps: {total / counted * 1000:.0f} ms/step, {counted * batch_size / total:.1f} images/s")
    for phase in PHASES:
        print(f"  {phase:<10} {totals[phase] / counted * 1000:8.1f} ms  {100 * totals[phase] / total:5.1f} %")


if __name__ == "__main__":
    main()
