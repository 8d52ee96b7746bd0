"""The model computes what the authors' implementation computes, on one golden case of the base variant.

The proof is in float64: the authors' code, run in float64 on the same inputs and synthetic weights, gave
`golden_base_seed0_f64.pt`. Float64 rounding is far below anything a wrong model changes, so every output,
loss, gradient and post-processed box must agree within F64_BAR of the tensor's largest value, with the compiled
kernel (the default) and with the pure-PyTorch reference. A mutated constant must fail that bar.

Float32 results are not portable across CPU models (vectorised sums round differently), so the float32 golden
file is compared with bars relative to each tensor's scale: they absorb that noise and still catch real errors
(a 1 % change of one loss constant fails them).
"""

from collections.abc import Iterator

import pytest
import torch

import model
import ops
from deformable_detr.models.position_encoding import PositionEmbeddingSine
from fixtures.model_reference import MODEL_KEYS, golden_case, golden_case_f64, synthetic_state_dict

F64_BAR = 1e-7  # of each tensor's largest absolute value
# Float32 (measured noise against the float32 golden file in brackets): outputs, losses and boxes within 1e-4 of
# the tensor's largest value [7e-7]; gradients, which sum many more rounded terms, within 2e-3 of their norm
# [7e-4]. Sampling-offset gradients are location gradients, one-sided at pixel boundaries: a sample within float32
# rounding of a boundary takes the other side's slope, so they get 5e-2 of their norm [6.4e-3].
F32_BAR = 1e-4
F32_GRAD_BAR = 2e-3
F32_LOCATION_GRAD_BAR = 5e-2
IMPLEMENTATIONS = ("kernel", "reference")


def float32_bar(name: str) -> float:
    if not name.startswith("grad"):
        return F32_BAR
    return F32_LOCATION_GRAD_BAR if "sampling_offsets" in name else F32_GRAD_BAR


def run_golden_case(impl: str, dtype: torch.dtype) -> dict:
    """Forward, losses, backward and post-processing of the golden inputs in `dtype` through `impl`."""
    golden = golden_case()
    torch.manual_seed(0)
    detector, criterion, postprocessors = model.build_model({key: golden["config"][key] for key in MODEL_KEYS})
    detector.load_state_dict(synthetic_state_dict("base"), strict=True)
    detector.to(dtype).eval()  # the golden case ran with dropout off, forward and backward
    targets = [{key: value.to(dtype) if value.is_floating_point() else value for key, value in target.items()}
               for target in golden["targets"]]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ops._build.IMPL_ENV, impl)
        outputs = detector(golden["images"].to(dtype), golden["mask"])
        losses = criterion(outputs, targets)
        total = criterion.total_loss(losses)
        total.backward()
    parameters = dict(detector.named_parameters())
    return {
        "criterion": criterion,
        "outputs": outputs,
        "losses": losses,
        "total_loss": total,
        "trainable": {name for name, p in parameters.items() if p.requires_grad},
        # a frozen parameter has no gradient: norm 0, as the authors' float64 run reports it
        "grad_norms": {name: p.grad.double().norm() if p.grad is not None else torch.zeros((), dtype=torch.float64)
                       for name, p in parameters.items()},
        "grads": {name: p.grad for name, p in parameters.items() if p.grad is not None},
        "postprocess": postprocessors["bbox"](outputs, golden["orig_sizes"]),
    }


def compared_tensors(ours: dict, expected: dict) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, ours, expected) for every tensor a golden file holds; names say which kind of value it is."""
    yield "outputs.pred_logits", ours["outputs"]["pred_logits"], expected["outputs"]["pred_logits"]
    yield "outputs.pred_boxes", ours["outputs"]["pred_boxes"], expected["outputs"]["pred_boxes"]
    assert len(ours["outputs"]["aux_outputs"]) == len(expected["outputs"]["aux_outputs"]) == 5
    for layer, (mine, theirs) in enumerate(zip(ours["outputs"]["aux_outputs"], expected["outputs"]["aux_outputs"])):
        for key in ("pred_logits", "pred_boxes"):
            yield f"aux_outputs[{layer}].{key}", mine[key], theirs[key]
    assert set(ours["losses"]) == set(expected["loss_dict"])
    for name, value in expected["loss_dict"].items():
        yield f"loss.{name}", ours["losses"][name], torch.as_tensor(value)
    yield "loss.total", ours["total_loss"], torch.as_tensor(expected["total_loss"])
    assert set(expected["grad_norms"]) <= set(ours["grad_norms"])
    for name, value in expected["grad_norms"].items():
        yield f"grad_norm.{name}", ours["grad_norms"][name], torch.as_tensor(value)
    for name, value in expected["grads_small"].items():
        yield f"grad.{name}", ours["grads"][name], value
    for image, (mine, theirs) in enumerate(zip(ours["postprocess"], expected["postprocess"])):
        for key in ("scores", "boxes"):
            yield f"postprocess[{image}].{key}", mine[key], theirs[key]


def scale_relative_errors(ours: dict, expected: dict, gradients_by_norm: bool = False) -> dict[str, float]:
    """name -> max |ours - expected| / max |expected| (computed in float64); for gradients with
    `gradients_by_norm`, ||ours - expected|| / ||expected|| instead."""
    errors = {}
    tiny = torch.finfo(torch.float64).tiny
    for name, actual, wanted in compared_tensors(ours, expected):
        actual, wanted = actual.detach().double(), wanted.detach().double()
        assert actual.shape == wanted.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(wanted.shape)}"
        if gradients_by_norm and name.startswith("grad"):
            errors[name] = float((actual - wanted).norm() / wanted.norm().clamp_min(tiny))
        else:
            errors[name] = float((actual - wanted).abs().max() / wanted.abs().max().clamp_min(tiny))
    return errors


def over_bar(errors: dict[str, float], bar_of) -> list[str]:
    return [f"{name}: {error:.3g} of its scale (bar {bar_of(name):.0e})"
            for name, error in errors.items() if not error <= bar_of(name)]


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def float64_run(request: pytest.FixtureRequest) -> dict:
    if request.param == "kernel" and not ops.kernel_available():
        pytest.fail(f"the compiled kernel did not load: {ops._build.STATE.origin}")
    return run_golden_case(request.param, torch.float64)


@pytest.fixture(scope="module")
def float32_run() -> dict:
    return run_golden_case("auto", torch.float32)


def test_float64_matches_the_authors_float64_within_1e7_of_each_tensors_scale(float64_run: dict) -> None:
    errors = scale_relative_errors(float64_run, golden_case_f64())
    assert len(errors) > 300  # outputs, 5 aux layers, losses, every gradient norm, small gradients, boxes
    failures = over_bar(errors, lambda name: F64_BAR)
    assert not failures, "\n".join(failures)


def test_float64_postprocessed_labels_and_matching_equal_the_authors(float64_run: dict) -> None:
    golden = golden_case()
    for image, (ours, theirs) in enumerate(zip(float64_run["postprocess"], golden_case_f64()["postprocess"])):
        assert torch.equal(ours["labels"], theirs["labels"]), f"labels of image {image}"
    matcher = float64_run["criterion"].matcher
    targets = [{key: value.double() if value.is_floating_point() else value for key, value in target.items()}
               for target in golden["targets"]]
    layers = [(float64_run["outputs"], golden["matcher_indices"])]
    layers += list(zip(float64_run["outputs"]["aux_outputs"], golden["matcher_indices_aux"]))
    for layer, (outputs, expected) in enumerate(layers):
        for (ours_q, ours_t), (theirs_q, theirs_t) in zip(matcher(outputs, targets), expected):
            assert torch.equal(ours_q, theirs_q) and torch.equal(ours_t, theirs_t), f"matching of layer {layer}"


def test_trainable_parameters_and_weight_dict_are_the_authors(float32_run: dict) -> None:
    assert float32_run["trainable"] == set(golden_case()["grad_norms"])
    assert float32_run["criterion"].weight_dict == golden_case()["config"]["weight_dict"]


def test_float32_matches_the_authors_float32_relative_to_each_tensors_scale(float32_run: dict) -> None:
    errors = scale_relative_errors(float32_run, golden_case(), gradients_by_norm=True)
    failures = over_bar(errors, float32_bar)
    assert not failures, "\n".join(failures)


def test_float32_matching_costs_match_relative_to_their_scale(float32_run: dict) -> None:
    golden = golden_case()
    costs = float32_run["criterion"].matcher.cost_matrices(float32_run["outputs"], golden["targets"])
    for image, (ours, theirs) in enumerate(zip(costs, golden["matcher_cost"])):
        error = float((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max())
        assert error <= F32_BAR, f"matching cost of image {image}: {error:.3g} of its scale"


def test_a_changed_constant_fails_the_float64_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """The position encoding's eps moved from 1e-6 to 1e-5: a change far smaller than any real bug."""
    monkeypatch.setattr(PositionEmbeddingSine, "eps", 1e-5)
    errors = scale_relative_errors(run_golden_case("auto", torch.float64), golden_case_f64())
    failures = over_bar(errors, lambda name: F64_BAR)
    assert failures and max(errors.values()) > 2 * F64_BAR, max(errors.values())


def test_a_changed_loss_constant_fails_the_float32_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 % change of the focal loss's alpha must not hide in the float32 bars."""
    original = model.build_model

    def build_with_mutated_alpha(hparams):
        detector, criterion, postprocessors = original(hparams)
        criterion.focal_alpha *= 1.01
        return detector, criterion, postprocessors

    monkeypatch.setattr(model, "build_model", build_with_mutated_alpha)
    errors = scale_relative_errors(run_golden_case("auto", torch.float32), golden_case(), gradients_by_norm=True)
    failures = over_bar(errors, float32_bar)
    assert any(name.startswith("loss.loss_ce") for name in failures), failures
    assert any(name.startswith("grad") for name in failures), failures
