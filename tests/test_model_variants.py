"""Behaviour specific to box refinement and two-stage: initialisation, detached references, proposals."""

import math

import pytest
import torch

import model
from deformable_detr.models.transformer import DeformableTransformer

TINY = {
    "backbone": "resnet18", "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 3,
    "dim_feedforward": 64, "num_queries": 12, "enc_n_points": 2, "dec_n_points": 2, "dropout": 0.0,
    "num_classes": 5,
}
PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)


@pytest.mark.parametrize(
    ("options", "size_biases"),
    [({}, [-2.0] * 3), ({"with_box_refine": True}, [-2.0, 0.0, 0.0]),
     ({"with_box_refine": True, "two_stage": True}, [0.0] * 4)],
    ids=["base", "refine", "two_stage"],
)
def test_heads_start_from_the_authors_initialisation(options: dict, size_biases: list[float]) -> None:
    detector, _, _ = model.build_model({**TINY, **options})
    assert len(detector.bbox_embed) == len(size_biases)
    for head, size_bias in zip(detector.bbox_embed, size_biases):
        last = head.layers[-1]
        assert torch.all(last.weight == 0) and torch.all(last.bias[:2] == 0)
        assert torch.all(last.bias[2:] == size_bias)
    for head in detector.class_embed:
        torch.testing.assert_close(head.bias, torch.full((5,), PRIOR_BIAS))


def test_refined_reference_boxes_pass_no_gradient_to_earlier_box_heads() -> None:
    torch.manual_seed(0)
    detector, _, _ = model.build_model({**TINY, "with_box_refine": True})
    # non-zero last layers, so that every head's output depends on its input
    for head in detector.bbox_embed:
        torch.nn.init.normal_(head.layers[-1].weight, std=0.1)
    outputs = detector([torch.randn(3, 96, 96)])
    outputs["pred_boxes"].sum().backward()
    assert detector.bbox_embed[2].layers[0].weight.grad.abs().sum() > 0
    for index in (0, 1):
        grad = detector.bbox_embed[index].layers[0].weight.grad
        assert grad is None or torch.all(grad == 0), f"bbox_embed[{index}] got a gradient through the references"


def test_base_model_shares_one_head_across_layers() -> None:
    detector, _, _ = model.build_model(TINY)
    assert all(head is detector.bbox_embed[0] for head in detector.bbox_embed)
    assert all(head is detector.class_embed[0] for head in detector.class_embed)


def test_encoder_proposals_are_pixel_centres_of_the_valid_area_with_level_sizes() -> None:
    transformer = DeformableTransformer(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                        dim_feedforward=32, num_feature_levels=2, two_stage=True)
    shapes = [(4, 6), (2, 3)]
    masks = [torch.ones(1, 4, 6, dtype=torch.bool), torch.ones(1, 2, 3, dtype=torch.bool)]
    masks[0][:, :3, :5] = False  # valid 3 rows x 5 columns
    masks[1][:, :2, :3] = False  # all valid
    padding = torch.cat([m.flatten(1) for m in masks], 1)
    memory = torch.randn(1, 4 * 6 + 2 * 3, 32)
    output_memory, proposals = transformer.gen_encoder_output_proposals(memory, padding, shapes)
    boxes = proposals.sigmoid()[0]
    # level 0, row 1, column 2: centre ((2 + 0.5) / 5, (1 + 0.5) / 3), size 0.05
    torch.testing.assert_close(boxes[1 * 6 + 2], torch.tensor([2.5 / 5, 1.5 / 3, 0.05, 0.05]))
    # level 1, row 0, column 1: centre (1.5 / 3, 0.5 / 2), size 0.1
    torch.testing.assert_close(boxes[24 + 1], torch.tensor([1.5 / 3, 0.5 / 2, 0.1, 0.1]))
    assert torch.isinf(proposals[0, 3 * 6 + 1]).all()  # padding row
    assert torch.isinf(proposals[0, 5]).all()  # padding column
    # disabled proposals (padding) see a zeroed memory: LayerNorm(Linear(0))
    expected = transformer.enc_output_norm(transformer.enc_output.bias)
    torch.testing.assert_close(output_memory[0, 5], expected)
