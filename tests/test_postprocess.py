"""Post-processing: the authors' top-k (query, class) pairs, and the optional per-class NMS."""

import pytest
import torch
from torchvision.ops import box_iou

import model
from deformable_detr.models.postprocess import PostProcess

# One image, four queries, two classes: queries 0 and 1 are near-duplicates, query 2 overlaps them a little,
# query 3 lies elsewhere. Boxes are (cx, cy, w, h) in [0, 1].
BOXES = torch.tensor([[[0.30, 0.30, 0.20, 0.20], [0.31, 0.30, 0.20, 0.20], [0.40, 0.30, 0.20, 0.20],
                       [0.80, 0.80, 0.10, 0.10]]])
LOGITS = torch.tensor([[[4.0, -4.0], [3.0, 2.5], [2.0, -4.0], [1.0, -4.0]]])
SIZES = torch.tensor([[100, 200]])


def _as_set(result: dict) -> set[tuple[int, float]]:
    return {(int(label), round(float(score), 5)) for label, score in zip(result["labels"], result["scores"])}


def test_default_keeps_every_top_pair_as_the_authors() -> None:
    (result,) = PostProcess()({"pred_logits": LOGITS, "pred_boxes": BOXES}, SIZES)
    assert len(result["scores"]) == 8  # fewer pairs (4 queries x 2 classes) than num_detections
    assert torch.equal(result["scores"], LOGITS.sigmoid().flatten().sort(descending=True).values)


def test_nms_drops_duplicates_of_the_same_class_only_and_keeps_score_order() -> None:
    outputs = {"pred_logits": LOGITS, "pred_boxes": BOXES}
    (everything,) = PostProcess()(outputs, SIZES)
    (result,) = PostProcess(nms_iou_threshold=0.7)(outputs, SIZES)
    # Query 1's class-0 pair duplicates query 0's and goes; its class-1 pair is the best of class 1 and stays.
    dropped = _as_set(everything) - _as_set(result)
    assert (0, round(torch.tensor(3.0).sigmoid().item(), 5)) in dropped
    assert (1, round(torch.tensor(2.5).sigmoid().item(), 5)) in _as_set(result)
    assert bool((result["scores"][:-1] >= result["scores"][1:]).all())
    for label in result["labels"].unique():
        boxes = result["boxes"][result["labels"] == label]
        overlaps = box_iou(boxes, boxes).fill_diagonal_(0)
        assert bool((overlaps <= 0.7).all())
    # Query 2 overlaps query 0 by less than 0.7 IoU: kept.
    assert len(result["scores"]) == len(everything["scores"]) - 2


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_nms_threshold_out_of_range_is_rejected(threshold: float) -> None:
    with pytest.raises(ValueError, match="nms_iou_threshold"):
        PostProcess(nms_iou_threshold=threshold)
    with pytest.raises(ValueError, match="nms_iou_threshold"):
        model.build_model({"nms_iou_threshold": threshold})


def test_build_model_passes_the_nms_threshold_to_the_post_processor() -> None:
    _, _, postprocessors = model.build_model({"backbone": "resnet18", "nms_iou_threshold": 0.6})
    assert postprocessors["bbox"].nms_iou_threshold == 0.6
    _, _, postprocessors = model.build_model({"backbone": "resnet18"})
    assert postprocessors["bbox"].nms_iou_threshold == 1.0
