"""Visible progress of a training run: step, losses, speed and time left, at every report."""

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from determined import pytorch

logger = logging.getLogger("deformable_detr.training.progress")

SHOWN_TERMS = ("loss", "loss_ce", "loss_bbox", "loss_giou")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressLogger(pytorch.PyTorchCallback):
    """Logs one line per reporting period and per validation.

    Args:
        global_batch_size: images per training step over all workers.
        total_batches: a callable giving the run's length in batches (known once the data is built),
            or returning None when unknown.
        start_batch: batches already trained (a resumed run).
        metrics_file: when given, every report is also appended to it as a JSON line
            (`kind` "train" or "validation", `batch`, `seconds`, and the metrics).
        chief: whether this worker logs (every worker sees the same averaged metrics: one log is enough).
    """

    def __init__(
        self,
        global_batch_size: int,
        total_batches: Callable[[], int | None],
        start_batch: int = 0,
        metrics_file: str | None = None,
        chief: bool = True,
    ):
        self.global_batch_size = global_batch_size
        self.total_batches = total_batches
        self.start_batch = start_batch
        self.batches_done = start_batch
        self.metrics_file = metrics_file
        self.chief = chief
        self.start_time = time.monotonic()
        self.last_time = self.start_time

    def on_training_start(self) -> None:
        self.start_time = self.last_time = time.monotonic()

    def on_training_workload_end(self, avg_metrics: dict[str, Any], batch_metrics: Any) -> None:
        now = time.monotonic()
        batches = len(batch_metrics)
        self.batches_done += batches
        images_per_second = batches * self.global_batch_size / max(now - self.last_time, 1e-9)
        self.last_time = now
        terms = " ".join(f"{name} {avg_metrics[name]:.4f}" for name in SHOWN_TERMS if name in avg_metrics)
        self._record("train", avg_metrics)
        total = self.total_batches()
        if total:
            rate = (now - self.start_time) / (self.batches_done - self.start_batch)
            remaining = rate * max(total - self.batches_done, 0)
            position = f"batch {self.batches_done}/{total}"
            left = f", {_duration(remaining)} left"
        else:
            position, left = f"batch {self.batches_done}", ""
        if self.chief:
            logger.info(f"{position} | {terms} | {images_per_second:.1f} img/s{left}")

    def on_validation_end(self, metrics: dict[str, Any]) -> None:
        shown = " ".join(f"{name} {metrics[name]:.4f}" for name in ("mAP", "mAP_50", "mAP_75", "loss") if name in metrics)
        if self.chief:
            logger.info(f"validation after {self.batches_done} batches | {shown}")
        self._record("validation", metrics)

    def _record(self, kind: str, metrics: dict[str, Any]) -> None:
        if self.metrics_file is None:
            return
        record = {"kind": kind, "batch": self.batches_done, "seconds": round(time.monotonic() - self.start_time, 3)}
        record.update({name: float(value) for name, value in metrics.items() if isinstance(value, int | float)})
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")
