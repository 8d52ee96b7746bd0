"""The state_dict has the authors' keys, shapes and shared tensors, so their checkpoints load strictly."""

import io
import json

import pytest
import torch

import model
from fixtures.model_reference import VARIANTS, official_aliases, official_keys, reference_path


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant_model(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module]:
    detector, _, _ = model.build_model(VARIANTS[request.param])
    return request.param, detector


def test_state_dict_keys_and_shapes_are_the_official_ones_in_order(variant_model) -> None:
    variant, detector = variant_model
    ours = [(key, tuple(value.shape), str(value.dtype).removeprefix("torch."))
            for key, value in detector.state_dict().items()]
    assert ours == [(key, tuple(shape), dtype) for key, shape, dtype in official_keys(variant)]


def test_shared_heads_are_the_same_tensors_as_in_the_official_model(variant_model) -> None:
    variant, detector = variant_model
    state = detector.state_dict(keep_vars=True)
    aliases = official_aliases(variant)
    for key, first in aliases.items():
        assert state[key] is state[first], f"{key} should be the same tensor as {first}"
    # and no other keys share storage
    owners: dict[int, str] = {}
    for key, value in state.items():
        if key not in aliases:
            assert id(value) not in owners, f"{key} unexpectedly shares its tensor with {owners.get(id(value))}"
            owners[id(value)] = key


def test_parameter_counts_match_the_official_ones(variant_model) -> None:
    variant, detector = variant_model
    with open(reference_path("param_counts.json")) as handle:
        expected = json.load(handle)[variant]
    parameters = list(detector.parameters())  # shared parameters appear once
    assert sum(p.numel() for p in parameters) == expected["params_unique"]
    assert sum(p.numel() for p in parameters if p.requires_grad) == expected["params_trainable"]
    assert len(list(detector.named_parameters())) == expected["n_named_parameters"]


def test_checkpoint_round_trip_restores_the_same_function() -> None:
    hparams = {"backbone": "resnet18", "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2,
               "dim_feedforward": 64, "num_queries": 10, "with_box_refine": True, "two_stage": True}
    torch.manual_seed(0)
    first, _, _ = model.build_model(hparams)
    torch.manual_seed(1)
    second, _, _ = model.build_model(hparams)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict()}, buffer)
    buffer.seek(0)
    second.load_state_dict(torch.load(buffer, weights_only=True)["model"], strict=True)
    first.eval()
    second.eval()
    images = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        expected, actual = first(images), second(images)
    assert torch.equal(expected["pred_logits"], actual["pred_logits"])
    assert torch.equal(expected["pred_boxes"], actual["pred_boxes"])
