"""SetCriterion: every term present, empty targets, the focal-loss scaling and the loss weights."""

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from deformable_detr.models.criterion import SetCriterion, build_weight_dict
from deformable_detr.config.model import ModelSettings
from deformable_detr.models.matcher import HungarianMatcher


def _criterion(num_classes: int = 5) -> SetCriterion:
    config = ModelSettings(dec_layers=3, two_stage=True, with_box_refine=True, num_classes=num_classes)
    return SetCriterion(num_classes, HungarianMatcher(2, 5, 2), build_weight_dict(config), focal_alpha=0.25)


def _outputs(batch: int = 2, queries: int = 10, classes: int = 5, layers: int = 3) -> dict:
    generator = torch.Generator().manual_seed(0)

    def head() -> dict:
        return {"pred_logits": torch.randn(batch, queries, classes, generator=generator, requires_grad=True),
                "pred_boxes": (torch.rand(batch, queries, 4, generator=generator) * 0.4 + 0.3).requires_grad_()}

    outputs = head()
    outputs["aux_outputs"] = [head() for _ in range(layers - 1)]
    outputs["enc_outputs"] = head()
    return outputs


TARGETS = [
    {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.4, 0.1, 0.1]]),
     "image_id": torch.tensor(7)},
    {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.6, 0.4, 0.3, 0.2]])},
]


def test_every_term_is_returned_and_weighted() -> None:
    criterion = _criterion()
    losses = criterion(_outputs(), TARGETS)
    base = ["loss_ce", "loss_bbox", "loss_giou", "cardinality_error"]
    expected = set(base + ["class_error"])
    for suffix in ["_0", "_1", "_enc"]:
        expected |= {name + suffix for name in base}
    assert set(losses) == expected
    weighted = {name for name in losses if name in criterion.weight_dict}
    assert weighted == {name for name in expected if name.startswith(("loss_ce", "loss_bbox", "loss_giou"))}
    assert criterion.weight_dict["loss_giou_enc"] == 2.0 and criterion.weight_dict["loss_bbox_1"] == 5.0
    total = criterion.total_loss(losses)
    total.backward()
    assert torch.isfinite(total)


def test_empty_targets_give_finite_losses_with_zero_box_terms() -> None:
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)} for _ in range(2)]
    losses = _criterion()(_outputs(), empty)
    assert all(torch.isfinite(value) for value in losses.values())
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    assert losses["class_error"].item() == 100
    assert losses["loss_ce"].item() > 0


def test_focal_term_is_averaged_over_classes_and_scaled_by_the_number_of_queries() -> None:
    criterion = _criterion()
    outputs = {key: value for key, value in _outputs().items() if key.startswith("pred")}
    indices = criterion.matcher(outputs, TARGETS)
    onehot = torch.zeros(2, 10, 5)
    for image, (queries, target_indices) in enumerate(indices):
        onehot[image, queries, TARGETS[image]["labels"][target_indices]] = 1
    per_element = sigmoid_focal_loss(outputs["pred_logits"], onehot, alpha=0.25, gamma=2, reduction="none")
    expected = per_element.mean(1).sum() / 3 * 10  # 3 boxes, 10 queries
    torch.testing.assert_close(criterion(outputs, TARGETS)["loss_ce"], expected)


def test_perfect_boxes_give_zero_box_losses() -> None:
    criterion = _criterion()
    outputs = {key: value.detach().clone() for key, value in _outputs().items() if key.startswith("pred")}
    outputs["pred_boxes"][0, :2] = TARGETS[0]["boxes"]
    outputs["pred_boxes"][1, :1] = TARGETS[1]["boxes"]
    outputs["pred_logits"][0, 0, 1] = outputs["pred_logits"][0, 1, 3] = outputs["pred_logits"][1, 0, 4] = 20.0
    losses = criterion(outputs, TARGETS)
    assert losses["loss_bbox"].item() == pytest.approx(0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0, abs=1e-6)
    assert losses["class_error"].item() == 0


def test_weight_dict_has_encoder_terms_for_two_stage_even_without_aux_loss() -> None:
    weights = build_weight_dict(ModelSettings(aux_loss=False, two_stage=True, with_box_refine=True))
    assert set(weights) == {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"}


def test_missing_target_keys_are_named() -> None:
    with pytest.raises(ValueError, match="targets\\[1\\] needs 'labels' and 'boxes'"):
        _criterion()(_outputs(), [TARGETS[0], {"labels": torch.tensor([1])}])
