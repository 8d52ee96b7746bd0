"""Query denoising (`denoising_groups`): noised copies of the targets decoded as hidden extra queries in training,
each trained against the target it was made from; the matching queries and inference are unchanged by them."""

import determined as det
import pytest
import torch

from two_stage_models import TINY_TWO_STAGE, build, images
from deformable_detr.config.experiment import parse_hyperparameters
from deformable_detr.models.criterion import build_weight_dict
from deformable_detr.models.denoising import denoising_indices, noised_queries, training_queries
from model_def import DeformableDETRTrial
from trial_runs import TINY_MODEL

TINY = TINY_TWO_STAGE
DENOISING = {**TINY, "denoising_groups": 3}
TARGETS = [
    {"labels": torch.tensor([1, 3]),
     "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]], dtype=torch.float64)},
    {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]], dtype=torch.float64)},
]


def queries(groups=3, box_noise=0.4, label_noise=0.2, seed=0, targets=TARGETS):
    return noised_queries(targets, groups, 5, box_noise, label_noise, torch.Generator().manual_seed(seed))


def test_queries_are_the_targets_in_groups_padded_to_the_largest_image():
    exact = queries(box_noise=0.0, label_noise=0.0)
    assert (exact.groups, exact.per_group) == (3, 2)
    assert exact.labels.tolist() == [[1, 3] * 3, [2, 5] * 3]  # 5 = num_classes marks the padding
    torch.testing.assert_close(exact.boxes[0], TARGETS[0]["boxes"].repeat(3, 1))
    assert exact.boxes[1, 0].tolist() == TARGETS[1]["boxes"][0].tolist()
    assert exact.boxes[1, 1::2].abs().sum() == 0


def test_box_noise_moves_centres_and_scales_sides_within_lambda():
    many = [{"labels": torch.zeros(200, dtype=torch.int64),
             "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]], dtype=torch.float64).repeat(200, 1)}]
    noised = queries(groups=2, box_noise=0.4, targets=many).boxes[0]
    shift = (noised[:, :2] - 0.5).abs() / torch.tensor([0.2, 0.3], dtype=torch.float64)
    ratio = noised[:, 2:] / torch.tensor([0.2, 0.3], dtype=torch.float64)
    assert shift.max() <= 0.2 + 1e-12 and shift.max() > 0.15  # up to lambda * side / 2, and it gets there
    assert ratio.min() >= 0.6 - 1e-12 and ratio.max() <= 1.4 + 1e-12 and ratio.max() > 1.3
    labels = queries(groups=2, label_noise=0.5, targets=many).labels[0]
    flipped = (labels != 0).float().mean()  # a random label is 0 one time in 5
    assert 0.3 < flipped < 0.5 and labels.max() < 5


def test_queries_depend_only_on_the_generator_and_need_targets():
    first, again, other = queries(seed=4), queries(seed=4), queries(seed=5)
    assert torch.equal(first.boxes, again.boxes) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.boxes, other.boxes)
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    assert queries(targets=empty) is None


def test_the_settings_decide_whether_and_how_a_step_is_noised():
    settings = parse_hyperparameters({**DENOISING, "num_classes": 7, "denoising_label_noise": 0.6})[0]
    drawn = training_queries(TARGETS, settings, torch.Generator().manual_seed(2))
    expected = noised_queries(TARGETS, 3, 7, 0.4, 0.6, torch.Generator().manual_seed(2))
    assert drawn.groups == 3 and torch.equal(drawn.boxes, expected.boxes) and torch.equal(drawn.labels, expected.labels)
    assert training_queries(TARGETS, parse_hyperparameters(TINY)[0]) is None  # denoising_groups 0


def test_indices_pair_each_query_with_the_target_it_was_made_from():
    indices = denoising_indices(TARGETS, groups=3, per_group=2)
    assert [(q.tolist(), t.tolist()) for q, t in indices] == [([0, 1, 2, 3, 4, 5], [0, 1, 0, 1, 0, 1]),
                                                              ([0, 2, 4], [0, 0, 0])]


def test_the_matching_queries_compute_what_they_would_without_the_denoising_ones():
    detector, _ = build(DENOISING)
    detector.train()
    with_denoising = detector(images(), denoising=queries())
    alone = detector(images())
    assert with_denoising["denoising"]["pred_boxes"].shape == (2, 6, 4)
    assert len(with_denoising["denoising"]["aux_outputs"]) == 2 and "denoising" not in alone
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(with_denoising[key], alone[key], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(with_denoising["aux_outputs"][0]["pred_logits"], alone["aux_outputs"][0]["pred_logits"],
                               rtol=1e-9, atol=1e-9)


def test_denoising_losses_measure_each_query_against_its_own_target():
    detector, criterion = build(DENOISING)
    outputs = detector.train()(images(), denoising=queries())
    group = outputs["denoising"]
    # a perfect last layer: every real slot gives back its target exactly
    perfect = group["pred_boxes"].detach().clone()
    for image, (query_index, target_index) in enumerate(denoising_indices(TARGETS, 3, 2)):
        perfect[image, query_index] = TARGETS[image]["boxes"][target_index]
    group["pred_boxes"] = perfect
    losses = criterion(outputs, TARGETS, across_workers=False)
    assert losses["loss_bbox_dn"].item() == 0.0 and losses["loss_giou_dn"].item() == pytest.approx(0.0, abs=1e-12)
    assert losses["loss_bbox_0_dn"].item() > 0.01  # the earlier layers are not perfect
    assert {f"loss_ce_{layer}_dn" for layer in (0, 1)} <= set(losses)
    weights = build_weight_dict(parse_hyperparameters(DENOISING)[0])
    assert weights["loss_giou_dn"] == weights["loss_giou"] and weights["loss_ce_1_dn"] == weights["loss_ce_1"]
    assert "loss_ce_enc_dn" not in weights
    losses["loss_ce_dn"].backward()
    assert detector.transformer.label_embed.weight.grad.abs().sum() > 0


def test_without_denoising_groups_the_model_has_the_authors_parameters():
    plain, _ = build(TINY)
    assert not hasattr(plain.transformer, "label_embed")
    assert not any(name.endswith("_dn") for name in build_weight_dict(parse_hyperparameters(TINY)[0]))
    with_groups, _ = build(DENOISING)
    extra = set(with_groups.state_dict()) - set(plain.state_dict())
    assert extra == {"transformer.label_embed.weight"}


@pytest.mark.parametrize("hparams, message", [
    ({**DENOISING, "denoising_groups": -1}, "denoising_groups' must be >= 0"),
    ({**DENOISING, "denoising_box_noise": 1.5}, "denoising_box_noise' must be in"),
    ({**DENOISING, "denoising_label_noise": -0.1}, "denoising_label_noise' must be in"),
    ({**TINY, "two_stage": False, "denoising_groups": 2}, "requires 'two_stage'"),
])
def test_bad_denoising_settings_are_rejected(hparams, message):
    with pytest.raises(ValueError, match=message):
        parse_hyperparameters(hparams)


def test_the_trial_draws_each_steps_queries_from_seed_rank_and_step():
    experiment = {
        "searcher": {"name": "single", "metric": "mAP", "smaller_is_better": False},
        "reproducibility": {"experiment_seed": 0},
        "data": {"backend": "fake", "fake_length": 4, "image_scale": 0.2, "num_workers": 0},
    }
    hparams = {**TINY_MODEL, "with_box_refine": True, "two_stage": True, "denoising_groups": 2,
               "global_batch_size": 2}
    with det.pytorch.init(hparams=hparams, exp_conf=experiment, enable_tensorboard_logging=False) as context:
        trial = DeformableDETRTrial(context)
        step_3, again, step_4 = (trial._denoising_queries(TARGETS, step) for step in (3, 3, 4))
        assert step_3.groups == 2 and torch.equal(step_3.boxes, again.boxes)
        assert not torch.equal(step_3.boxes, step_4.boxes)
