"""The COCO reducer gives the numbers pycocotools gives on the same detections, however they are split
across workers, and faster-coco-eval gives the same numbers."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from deformable_detr.inference.results import detections_to_rows
from deformable_detr.training.coco_eval import CocoDetectionReducer, evaluate_detections
from deformable_detr.data import synthetic


@pytest.fixture(scope="module")
def coco_gt(tmp_path_factory) -> COCO:
    data_dir = tmp_path_factory.mktemp("coco")
    synthetic.main(["--out", str(data_dir), "--train", "0", "--val", "30", "--size", "96", "--seed", "5"])
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(data_dir / "annotations" / "instances_val2017.json"))


def noisy_detections(coco: COCO, seed: int) -> tuple[list[int], list[dict[str, torch.Tensor]]]:
    """Per image: the true boxes jittered, some labels wrong, plus false positives, with random scores."""
    generator = torch.Generator().manual_seed(seed)
    image_ids, results = [], []
    for image_id in sorted(coco.getImgIds()):
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)]).reshape(-1, 4)
        labels = torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)
        boxes = boxes + torch.randn(boxes.shape, generator=generator) * 3
        flip = torch.rand(len(labels), generator=generator) < 0.2
        labels = torch.where(flip, torch.randint(1, 5, labels.shape, generator=generator), labels)
        extra = torch.rand(3, 4, generator=generator) * 60
        boxes = torch.cat([boxes, torch.cat([extra[:, :2], extra[:, :2] + extra[:, 2:] + 4], dim=1)])
        labels = torch.cat([labels, torch.randint(1, 5, (3,), generator=generator)])
        scores = torch.rand(len(labels), generator=generator)
        image_ids.append(image_id)
        results.append({"boxes": boxes, "labels": labels, "scores": scores})
    return image_ids, results


def pycocotools_directly(coco: COCO, image_ids: list[int], results: list[dict]) -> list[float]:
    entries = []
    for image_id, result in zip(image_ids, results):
        for (x1, y1, x2, y2), label, score in zip(result["boxes"].tolist(), result["labels"].tolist(),
                                                   result["scores"].tolist()):
            entries.append({"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        detections = coco.loadRes(json.loads(json.dumps(entries)))
        evaluator = COCOeval(coco, detections, "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [max(float(v), 0.0) for v in evaluator.stats[:6]]


def test_reducer_equals_pycocotools_run_directly(coco_gt):
    image_ids, results = noisy_detections(coco_gt, seed=0)
    reducer = CocoDetectionReducer(coco_gt, label_to_cat_id=None)
    for start in range(0, len(image_ids), 4):
        reducer.update(image_ids[start : start + 4], results[start : start + 4])
    metrics = reducer.cross_slot_reduce([reducer.per_slot_reduce()])
    expected = pycocotools_directly(coco_gt, image_ids, results)
    assert 0.1 < metrics["mAP"] < 0.95  # a non-trivial case
    assert [metrics[name] for name in ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large")] == \
        pytest.approx(expected, abs=1e-12)


def test_reducer_merges_workers_and_counts_each_image_once(coco_gt):
    image_ids, results = noisy_detections(coco_gt, seed=1)
    whole = CocoDetectionReducer(coco_gt, None)
    whole.update(image_ids, results)
    expected = whole.cross_slot_reduce([whole.per_slot_reduce()])
    workers = [CocoDetectionReducer(coco_gt, None) for _ in range(3)]
    for index, (image_id, result) in enumerate(zip(image_ids, results)):
        workers[index % 3].update([image_id], [result])
    workers[2].update([image_ids[0]], [results[0]])  # a padded shard repeats an image
    merged = workers[0].cross_slot_reduce([worker.per_slot_reduce() for worker in workers])
    assert merged == pytest.approx(expected, abs=1e-12)


def test_faster_coco_eval_gives_the_same_numbers(coco_gt):
    image_ids, results = noisy_detections(coco_gt, seed=2)
    rows = detections_to_rows(image_ids, results, None)
    reference = evaluate_detections(coco_gt, rows, image_ids, "pycocotools")
    faster = evaluate_detections(coco_gt, rows, image_ids, "faster_coco_eval")
    assert faster == pytest.approx(reference, abs=1e-9)


def test_labels_are_mapped_back_to_category_ids(coco_gt):
    image_ids, results = noisy_detections(coco_gt, seed=3)
    label_to_cat_id = [1, 2, 3, 4]
    remapped = [{**r, "labels": r["labels"] - 1} for r in results]  # labels 0..3 for categories 1..4
    direct = evaluate_detections(coco_gt, detections_to_rows(image_ids, results, None), image_ids)
    mapped = evaluate_detections(coco_gt, detections_to_rows(image_ids, remapped, label_to_cat_id), image_ids)
    assert mapped == direct


def test_no_detections_give_zero_and_unknown_evaluator_is_rejected(coco_gt):
    assert evaluate_detections(coco_gt, np.zeros((0, 7)), coco_gt.getImgIds())["mAP"] == 0.0
    with pytest.raises(ValueError, match="coco evaluator"):
        CocoDetectionReducer(coco_gt, None, evaluator="detectron")
