"""COCO bbox evaluation of detections gathered from every worker (a Determined `MetricReducer`)."""

import contextlib
import copy
import io
import logging

import numpy as np
import torch
from determined import pytorch

from deformable_detr.config.run import EVALUATORS
from deformable_detr.inference.results import ROW_FIELDS, detections_to_rows

logger = logging.getLogger(__name__)

METRIC_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large")


def evaluate_detections(
    coco_gt, rows: np.ndarray, image_ids: list[int], evaluator: str = "pycocotools"
) -> dict[str, float]:
    """COCO bbox metrics of `rows` ([N, 7], see `detections_to_rows`) over the images `image_ids`.

    Only the images that were evaluated count, so a partial validation set gives that subset's metrics.
    """
    if evaluator not in EVALUATORS:
        raise ValueError(f"coco evaluator must be one of {EVALUATORS}, got {evaluator!r}")
    image_ids = sorted(set(int(i) for i in image_ids))
    if len(rows) == 0 or not image_ids:
        logger.warning("COCO evaluation: no detections on %d images; every metric is 0", len(image_ids))
        return {name: 0.0 for name in METRIC_NAMES}
    # pycocotools prints its progress and table; keep the trial's log readable.
    with contextlib.redirect_stdout(io.StringIO()):
        if evaluator == "pycocotools":
            from pycocotools.cocoeval import COCOeval

            detections = coco_gt.loadRes(rows)
            coco_eval = COCOeval(coco_gt, detections, iouType="bbox")
        else:
            from faster_coco_eval import COCO, COCOeval_faster

            gt = COCO()
            gt.dataset = copy.deepcopy(coco_gt.dataset)
            gt.createIndex()
            detections = gt.loadRes(rows)
            coco_eval = COCOeval_faster(gt, detections, iouType="bbox")
        coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    # -1 marks "no ground truth of this size"; report it as 0 so metrics stay comparable.
    return {name: max(float(value), 0.0) for name, value in zip(METRIC_NAMES, coco_eval.stats[:6], strict=True)}


class CocoDetectionReducer(pytorch.MetricReducer):
    """Collects detections on each worker; the chief evaluates all of them at once.

    Args:
        coco_gt: the pycocotools `COCO` object of the validation annotations.
        label_to_cat_id: maps model labels to COCO category ids, or None when they are the same.
        evaluator: "pycocotools" or "faster_coco_eval".
    """

    def __init__(self, coco_gt, label_to_cat_id: list[int] | None, evaluator: str = "pycocotools"):
        if evaluator not in EVALUATORS:
            raise ValueError(f"coco evaluator must be one of {EVALUATORS}, got {evaluator!r}")
        self.coco_gt = coco_gt
        self.label_to_cat_id = label_to_cat_id
        self.evaluator = evaluator
        self.reset()

    def reset(self) -> None:
        self.rows: list[np.ndarray] = []
        self.image_ids: list[int] = []
        self._seen: set[int] = set()

    def update(self, image_ids: list[int], results: list[dict[str, torch.Tensor]]) -> None:
        # An image seen again in this slot (an undecodable image's place taken by the next one with
        # data.on_bad_image: skip) is counted once.
        fresh = [(int(i), found) for i, found in zip(image_ids, results, strict=True) if int(i) not in self._seen]
        self._seen.update(i for i, _ in fresh)
        self.image_ids.extend(i for i, _ in fresh)
        self.rows.append(detections_to_rows([i for i, _ in fresh], [found for _, found in fresh], self.label_to_cat_id))

    def per_slot_reduce(self) -> tuple[list[int], np.ndarray]:
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, len(ROW_FIELDS)))
        return self.image_ids, rows

    def cross_slot_reduce(self, per_slot_metrics: list[tuple[list[int], np.ndarray]]) -> dict[str, float]:
        # A sampler may hand an image to two workers (padding to equal shards): count each image once.
        seen: set[int] = set()
        kept_rows = []
        for image_ids, rows in per_slot_metrics:
            new_ids = [i for i in dict.fromkeys(image_ids) if i not in seen]
            seen.update(new_ids)
            if len(rows):
                kept_rows.append(rows[np.isin(rows[:, 0], new_ids)])
        rows = np.concatenate(kept_rows) if kept_rows else np.zeros((0, len(ROW_FIELDS)))
        left_out = sorted(set(self.coco_gt.imgs) - seen)
        if left_out:
            logger.warning(
                "COCO evaluation over %d of the %d validation images: %d left out (image ids %s%s)",
                len(seen), len(self.coco_gt.imgs), len(left_out), left_out[:10], " ..." if len(left_out) > 10 else "",
            )
        return evaluate_detections(self.coco_gt, rows, sorted(seen), self.evaluator)
