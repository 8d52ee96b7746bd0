"""Warm start from a file shaped like the authors' released checkpoints ({"model", "args": Namespace})."""

import argparse
import fractions
import io
import logging
import pickle

import pytest
import torch

import model
from deformable_detr.training.warm_start import load_pretrained
from fixtures.model_reference import synthetic_state_dict

REFINE = {"with_box_refine": True}


def _checkpoint_file(state_dict: dict) -> io.BytesIO:
    args = argparse.Namespace(lr=2e-4, backbone="resnet50", with_box_refine=True, two_stage=False, num_queries=300,
                              dataset_file="coco", output_dir="exps/r50_deformable_detr_plus_iterative_bbox_refinement")
    buffer = io.BytesIO()
    torch.save({"model": state_dict, "args": args, "epoch": 49}, buffer)
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="module")
def released() -> dict[str, torch.Tensor]:
    return synthetic_state_dict("refine")


def test_same_classes_load_every_tensor_strictly(released, caplog: pytest.LogCaptureFixture) -> None:
    detector, _, _ = model.build_model(REFINE)
    with caplog.at_level(logging.INFO):
        skipped = load_pretrained(detector, _checkpoint_file(released), logging.getLogger("test"))
    assert skipped == []
    state = detector.state_dict()
    assert all(torch.equal(state[key], value) for key, value in released.items())


def test_other_class_count_keeps_fresh_class_heads_and_says_so(released) -> None:
    torch.manual_seed(0)
    detector, _, _ = model.build_model({**REFINE, "num_classes": 3})
    fresh = {key: value.clone() for key, value in detector.state_dict().items() if key.startswith("class_embed.")}
    messages: list[str] = []
    skipped = load_pretrained(detector, _checkpoint_file(released), messages.append)
    assert skipped == sorted(key for key in released if key.startswith("class_embed."))
    state = detector.state_dict()
    assert all(torch.equal(state[key], value) for key, value in fresh.items())
    assert torch.equal(state["bbox_embed.3.layers.1.weight"], released["bbox_embed.3.layers.1.weight"])
    assert any("91 classes" in m and "3" in m and "fresh initialisation" in m for m in messages), messages


def test_another_variant_is_rejected_naming_the_keys(released) -> None:
    detector, _, _ = model.build_model({})  # base: no transformer.decoder.bbox_embed
    with pytest.raises(ValueError, match="unexpected transformer.decoder.bbox_embed"):
        load_pretrained(detector, _checkpoint_file(released), print)


def test_other_shape_mismatches_are_rejected(released) -> None:
    detector, _, _ = model.build_model({**REFINE, "num_queries": 100})
    with pytest.raises(ValueError, match=r"query_embed.weight: checkpoint \[300, 512\] vs model \[100, 512\]"):
        load_pretrained(detector, _checkpoint_file(released), print)


def test_files_needing_arbitrary_globals_are_refused() -> None:
    buffer = io.BytesIO()
    torch.save({"model": {}, "args": fractions.Fraction(1, 3)}, buffer)  # a global outside the allow-list
    buffer.seek(0)
    detector, _, _ = model.build_model(REFINE)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_pretrained(detector, buffer, print)
