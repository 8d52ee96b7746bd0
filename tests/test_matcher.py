"""Hungarian matcher properties, in the style of DETR's tests."""

import torch

from deformable_detr.models.matcher import HungarianMatcher


def _outputs(batch: int, queries: int, classes: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(batch, queries, classes, generator=generator),
        "pred_boxes": torch.rand(batch, queries, 4, generator=generator) * 0.5 + 0.25,
    }


def _targets(counts: list[int], classes: int, seed: int = 1) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {"labels": torch.randint(0, classes, (count,), generator=generator),
         "boxes": torch.rand(count, 4, generator=generator) * 0.5 + 0.25}
        for count in counts
    ]


def test_batched_matching_equals_matching_each_image_alone() -> None:
    matcher = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=2)
    outputs, targets = _outputs(3, 20, 7), _targets([4, 0, 6], 7)
    batched = matcher(outputs, targets)
    for image in range(3):
        single = {key: value[image:image + 1] for key, value in outputs.items()}
        (queries, target_indices), = matcher(single, [targets[image]])
        assert torch.equal(batched[image][0], queries)
        assert torch.equal(batched[image][1], target_indices)


def test_each_target_gets_one_distinct_query() -> None:
    matcher = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=2)
    (queries, target_indices), = matcher(_outputs(1, 12, 5), _targets([5], 5))
    assert queries.dtype == torch.int64 and target_indices.dtype == torch.int64
    assert sorted(target_indices.tolist()) == list(range(5))
    assert len(set(queries.tolist())) == 5


def test_empty_targets_give_empty_matches() -> None:
    matcher = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=2)
    for queries, target_indices in matcher(_outputs(2, 10, 4), _targets([0, 0], 4)):
        assert queries.numel() == 0 and target_indices.numel() == 0


def test_single_box_is_matched_to_the_query_that_predicts_it() -> None:
    matcher = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=2)
    outputs = _outputs(1, 8, 3)
    target = {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.3, 0.6, 0.2, 0.1]])}
    outputs["pred_boxes"][0, 5] = target["boxes"][0]
    outputs["pred_logits"][0, 5, 2] = 8.0
    (queries, target_indices), = matcher(outputs, [target])
    assert queries.tolist() == [5] and target_indices.tolist() == [0]


def test_cost_matrices_have_one_column_per_target() -> None:
    matcher = HungarianMatcher(cost_class=1, cost_bbox=1, cost_giou=1)
    costs = matcher.cost_matrices(_outputs(2, 6, 3), _targets([2, 3], 3))
    assert [tuple(cost.shape) for cost in costs] == [(6, 2), (6, 3)]
