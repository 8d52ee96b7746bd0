"""Hybrid matching (`one_to_many_queries`): a second, hidden group of two-stage proposals trained against the
targets repeated; the one-to-one group and inference are unchanged by it."""

import pytest
import torch

import model
from two_stage_models import TINY_TWO_STAGE, build, images
from deformable_detr.models.criterion import build_weight_dict
from deformable_detr.config.experiment import parse_hyperparameters

TINY = TINY_TWO_STAGE
HYBRID = {**TINY, "one_to_many_queries": 12, "one_to_many_repeats": 3}
TARGETS = [
    {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])},
    {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
]


def test_training_adds_a_one_to_many_group_of_every_layer():
    detector, _ = build(HYBRID)
    outputs = detector.train()(images())
    group = outputs["one_to_many"]
    assert outputs["pred_logits"].shape == (2, 8, 5) and outputs["pred_boxes"].shape == (2, 8, 4)
    assert group["pred_logits"].shape == (2, 12, 5) and group["pred_boxes"].shape == (2, 12, 4)
    assert len(group["aux_outputs"]) == 2 and group["aux_outputs"][0]["pred_boxes"].shape == (2, 12, 4)


def test_the_one_to_one_group_is_what_the_model_computes_without_the_other():
    # The same weights with and without the hidden group: the group mask keeps the first 8 queries apart.
    detector, _ = build(HYBRID)
    detector.train()
    with_group = detector(images())
    detector.transformer.one_to_many_proposals = 0
    alone = detector(images())
    assert "one_to_many" not in alone
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(with_group[key], alone[key], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(with_group["aux_outputs"][0]["pred_boxes"], alone["aux_outputs"][0]["pred_boxes"],
                               rtol=1e-9, atol=1e-9)


def test_inference_uses_only_the_one_to_one_group():
    detector, _ = build(HYBRID)
    outputs = detector.eval()(images())
    assert "one_to_many" not in outputs and outputs["pred_logits"].shape == (2, 8, 5)


def test_the_one_to_many_losses_match_every_repeated_target_and_are_weighted_like_the_others():
    detector, criterion = build({**HYBRID, "one_to_many_weight": 0.5})
    outputs = detector.train()(images())
    losses = criterion(outputs, TARGETS, across_workers=False)
    for name in ("loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_giou_1"):
        assert torch.isfinite(losses[f"{name}_one2many"])
        assert criterion.weight_dict[f"{name}_one2many"] == 0.5 * criterion.weight_dict[name]
    assert "loss_ce_enc_one2many" not in criterion.weight_dict
    # 3 targets repeated 3 times, matched one each among 12 queries: the L1 sum over 9 pairs, per 9 boxes
    group = {key: outputs["one_to_many"][key].detach() for key in ("pred_logits", "pred_boxes")}
    repeated = [{"labels": t["labels"].repeat(3), "boxes": t["boxes"].repeat(3, 1)} for t in TARGETS]
    indices = criterion.matcher(group, repeated)
    assert [len(src) for src, _ in indices] == [6, 3]
    expected = sum((group["pred_boxes"][b, src] - repeated[b]["boxes"][tgt]).abs().sum()
                   for b, (src, tgt) in enumerate(indices)) / 9
    torch.testing.assert_close(losses["loss_bbox_one2many"].detach(), expected.to(losses["loss_bbox_one2many"].dtype))
    # every term with a weight reaches the total, and the total trains the hidden group's proposals too
    criterion.total_loss(losses).backward()
    assert detector.transformer.pos_trans.weight.grad.abs().sum() > 0


def test_without_one_to_many_queries_the_weights_are_the_authors():
    settings, _ = parse_hyperparameters(TINY)
    assert not any(name.endswith("_one2many") for name in build_weight_dict(settings))


@pytest.mark.parametrize(("hparams", "message"), [
    ({**TINY, "two_stage": False, "one_to_many_queries": 4}, "requires 'two_stage'"),
    ({**HYBRID, "one_to_many_repeats": 0}, "one_to_many_repeats"),
    ({**HYBRID, "one_to_many_queries": -1}, "one_to_many_queries"),
])
def test_bad_hybrid_settings_are_rejected(hparams, message):
    with pytest.raises(ValueError, match=message):
        model.build_model(hparams)
