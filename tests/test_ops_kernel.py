"""The compiled CPU kernel of multi-scale deformable attention against the pure-PyTorch reference."""


import pytest
import torch

import ops
from fixtures.model_reference import msda_cases

GRAD_NAMES = ("grad_value", "grad_sampling_locations", "grad_attention_weights")


@pytest.fixture(scope="module", autouse=True)
def compiled_kernel() -> None:
    if not ops.kernel_available():
        pytest.skip(f"compiled kernel not available here: {ops._build.STATE.origin}")


def make_inputs(
    level_shapes: list[tuple[int, int]],
    batch: int = 2,
    num_queries: int = 5,
    heads: int = 2,
    channels: int = 4,
    points: int = 2,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    low: float = -0.2,
    high: float = 1.2,
) -> tuple[torch.Tensor, ...]:
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) with locations
    uniform in [low, high] (some outside the image when low < 0 or high > 1)."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(level_shapes, dtype=torch.int64)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    levels = len(level_shapes)
    value = torch.randn(batch, int(sizes.sum()), heads, channels, generator=generator, dtype=dtype)
    locations = torch.rand(batch, num_queries, heads, levels, points, 2, generator=generator, dtype=dtype)
    locations = low + (high - low) * locations
    weights = torch.rand(batch, num_queries, heads, levels, points, generator=generator, dtype=dtype)
    return value, spatial_shapes, level_start_index, locations, weights


def output_and_grads(function, inputs: tuple[torch.Tensor, ...], grad_output: torch.Tensor | None = None):
    """Output of `function` and the gradients of sum(output * grad_output) for value, locations, weights."""
    value, spatial_shapes, level_start_index, locations, weights = inputs
    differentiable = [tensor.detach().clone().requires_grad_() for tensor in (value, locations, weights)]
    output = function(differentiable[0], spatial_shapes, level_start_index, differentiable[1], differentiable[2])
    if grad_output is None:
        grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(7), dtype=output.dtype)
    grads = torch.autograd.grad(output, differentiable, grad_output)
    return output.detach(), grads


GRADCHECK_CASES = {
    "single_1x1_level": dict(level_shapes=[(1, 1)], channels=3),
    "non_square_levels": dict(level_shapes=[(3, 5), (4, 2), (1, 1)], channels=4),
    "30_channels": dict(level_shapes=[(2, 3), (1, 2)], channels=30, batch=1, num_queries=3),
    "71_channels": dict(level_shapes=[(3, 2)], channels=71, batch=1, num_queries=2, heads=1),
    "far_outside": dict(level_shapes=[(4, 3), (2, 2)], low=-1.0, high=2.0),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", sorted(GRADCHECK_CASES))
def test_gradcheck_float64_on_cpu_kernel(case: str, seed: int) -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(**GRADCHECK_CASES[case], seed=seed)
    assert (locations < 0).any() or (locations > 1).any(), "some points must lie outside [0, 1]"

    def attend(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return torch.ops.deformable_detr_ops.ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)

    inputs = tuple(tensor.requires_grad_() for tensor in (value, locations, weights))
    assert torch.autograd.gradcheck(attend, inputs, eps=1e-6, atol=1e-7)


ENCODER_LIKE = [(12, 16), (6, 8), (3, 4), (1, 2)]


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_kernel_equals_reference(dtype: torch.dtype, tolerance: float) -> None:
    inputs = make_inputs(ENCODER_LIKE, batch=2, num_queries=40, heads=4, channels=16, points=3, dtype=dtype)
    kernel_output, kernel_grads = output_and_grads(ops.ms_deform_attn, inputs)
    reference_output, reference_grads = output_and_grads(ops.ms_deform_attn_reference, inputs)
    assert kernel_output.dtype == dtype
    torch.testing.assert_close(kernel_output, reference_output, atol=tolerance, rtol=tolerance)
    for name, kernel_grad, reference_grad in zip(GRAD_NAMES, kernel_grads, reference_grads):
        # Location gradients are scaled by the level size (up to 16 here), hence the wider bound.
        torch.testing.assert_close(kernel_grad, reference_grad, atol=16 * tolerance, rtol=tolerance, msg=name)


def test_non_contiguous_inputs_give_the_same_result() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE, num_queries=9)
    # Same values, other memory layouts: a transposed copy viewed back, and a strided slice.
    value_strided = value.transpose(1, 2).contiguous().transpose(1, 2)
    locations_strided = torch.cat([locations, locations], dim=-1)[..., :2]
    assert not value_strided.is_contiguous() and not locations_strided.is_contiguous()
    expected = ops.ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
    actual = ops.ms_deform_attn(value_strided, spatial_shapes, level_start_index, locations_strided, weights)
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype: torch.dtype) -> None:
    # 256 samples per output: summing them in half precision would be off by many units in the last place.
    inputs = make_inputs(ENCODER_LIKE, num_queries=20, heads=2, channels=8, points=64, dtype=torch.float64)
    rounded = tuple(tensor.to(dtype) if tensor.is_floating_point() else tensor for tensor in inputs)
    widened = tuple(tensor.float() if tensor.is_floating_point() else tensor for tensor in rounded)
    grad_output = torch.ones(2, 20, 2 * 8)
    output, grads = output_and_grads(ops.ms_deform_attn, rounded, grad_output.to(dtype))
    exact_output, exact_grads = output_and_grads(ops.ms_deform_attn, widened, grad_output)
    assert output.dtype == dtype and all(grad.dtype == dtype for grad in grads)
    resolution = torch.finfo(dtype).eps
    # Only the final rounding to `dtype` remains: half a unit in the last place, relative.
    for name, actual, exact in zip(("output",) + GRAD_NAMES, (output,) + grads, (exact_output,) + exact_grads):
        torch.testing.assert_close(
            actual.float(), exact, rtol=resolution, atol=resolution * exact.abs().max().item() / 64, msg=name
        )


def test_mixed_dtypes_compute_in_the_promoted_dtype() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE, dtype=torch.float32)
    output = ops.ms_deform_attn(value.half(), spatial_shapes, level_start_index, locations, weights)
    expected = ops.ms_deform_attn_reference(value.half().float(), spatial_shapes, level_start_index, locations, weights)
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)


def test_golden_cases_match_grid_sample_and_the_authors_kernel_forward() -> None:
    cases = msda_cases()
    assert len(cases) >= 2
    for case in cases:
        inputs = tuple(
            case[key]
            for key in ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")
        )
        output, grads = output_and_grads(ops.ms_deform_attn, inputs, case["grad_output"])
        actual = dict(zip(("output",) + GRAD_NAMES, (output,) + grads))
        for name, tensor in actual.items():
            torch.testing.assert_close(tensor, case[name], atol=1e-12, rtol=1e-12, msg=f"{case['name']}: {name}")
        # The authors' CUDA kernel computes the same values; only its location gradient differs, at
        # points exactly on h_im = -1 or w_im = -1, which it drops and grid_sample keeps.
        torch.testing.assert_close(output, case["cuda_semantics"]["output"], atol=1e-12, rtol=1e-12)


def sample_one_point(x: float, y: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and location gradient of one point on a 2x2 image holding 1, 2 (top row), 3, 4."""
    value = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1)
    location = torch.tensor([x, y], dtype=torch.float64).view(1, 1, 1, 1, 1, 2).requires_grad_()
    weight = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
    output = ops.ms_deform_attn(value, torch.tensor([[2, 2]]), torch.tensor([0]), location, weight)
    (grad,) = torch.autograd.grad(output.sum(), location)
    return output.flatten(), grad.flatten()


def test_pixel_centres_edges_and_the_border_rule_follow_grid_sample() -> None:
    # Pixel centres sit at (i + 0.5) / size: the top-left centre reads exactly the top-left pixel.
    output, _ = sample_one_point(0.25, 0.25)
    assert output.item() == 1.0
    # Between the two top pixels: their mean; d/dx = (2 - 1) * W.
    output, grad = sample_one_point(0.5, 0.25)
    assert output.item() == 1.5 and grad.tolist() == [2.0, 4.0]
    # On the left image edge half the weight falls outside the image and reads zero.
    output, _ = sample_one_point(0.0, 0.25)
    assert output.item() == 0.5
    # h_im exactly -1 (y = -0.25 here): zero value but, as in grid_sample, the one-sided location gradient
    # of the row below (the authors' CUDA kernel drops the point there, gradient included).
    output, grad = sample_one_point(0.25, -0.25)
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).view(1, 1, 2, 2)
    grid = torch.tensor([2 * 0.25 - 1, 2 * -0.25 - 1], dtype=torch.float64).view(1, 1, 1, 2).requires_grad_()
    sampled = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    (grid_grad,) = torch.autograd.grad(sampled.sum(), grid)
    assert output.item() == sampled.item() == 0.0
    assert grad.tolist() == (2 * grid_grad).flatten().tolist() and grad[1].item() > 0.0
    output, grad = sample_one_point(0.25, -0.2499)
    assert output.item() > 0.0 and grad[1].item() > 0.0


def test_backward_is_deterministic_and_independent_of_thread_count() -> None:
    inputs = make_inputs(ENCODER_LIKE, batch=2, num_queries=60, heads=4, channels=8, points=4)
    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, single_thread = output_and_grads(ops.ms_deform_attn, inputs)
        torch.set_num_threads(2)
        _, two_threads = output_and_grads(ops.ms_deform_attn, inputs)
    finally:
        torch.set_num_threads(previous_threads)
    for name, first, second in zip(GRAD_NAMES, single_thread, two_threads):
        torch.testing.assert_close(first, second, atol=0, rtol=0, msg=name)


def test_empty_query_set_gives_empty_output_and_zero_value_gradient() -> None:
    inputs = make_inputs(ENCODER_LIKE, num_queries=0)
    output, grads = output_and_grads(ops.ms_deform_attn, inputs)
    assert output.shape == (2, 0, 2 * 4)
    assert grads[0].abs().sum() == 0 and grads[1].numel() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_forward_and_backward_ops(dtype: torch.dtype) -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(3, 4), (2, 1)], num_queries=3, dtype=dtype
    )
    forward_args = (value.requires_grad_(), spatial_shapes, level_start_index, locations.requires_grad_(),
                    weights.requires_grad_())
    torch.library.opcheck(torch.ops.deformable_detr_ops.ms_deform_attn.default, forward_args)
    grad_output = torch.randn(2, 3, 2 * 4, dtype=dtype)
    backward_args = (grad_output, value.detach(), spatial_shapes, level_start_index, locations.detach(), weights.detach())
    torch.library.opcheck(torch.ops.deformable_detr_ops.ms_deform_attn_backward.default, backward_args)


def test_torch_compile_fullgraph_matches_eager() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        ENCODER_LIKE, num_queries=7, dtype=torch.float32
    )

    def attend_and_project(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        attended = ops.ms_deform_attn(value * 2.0, spatial_shapes, level_start_index, locations.clamp(-0.5, 1.5),
                                      weights.softmax(-1))
        return attended.relu().sum(-1)

    compiled = torch.compile(attend_and_project, fullgraph=True, dynamic=False)
    eager_inputs = [tensor.clone().requires_grad_() for tensor in (value, locations, weights)]
    compiled_inputs = [tensor.clone().requires_grad_() for tensor in (value, locations, weights)]
    expected = attend_and_project(*eager_inputs)
    actual = compiled(*compiled_inputs)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    expected.sum().backward()
    actual.sum().backward()
    for eager_input, compiled_input in zip(eager_inputs, compiled_inputs):
        torch.testing.assert_close(compiled_input.grad, eager_input.grad, atol=1e-4, rtol=1e-4)


def test_torch_compile_graph_holds_the_compiled_op_not_the_reference() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE, dtype=torch.float32)
    graphs: list[torch.fx.GraphModule] = []

    def recording_backend(graph_module: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        graphs.append(graph_module)
        return graph_module.forward

    compiled = torch.compile(ops.ms_deform_attn, backend=recording_backend, fullgraph=True)
    compiled(value, spatial_shapes, level_start_index, locations, weights)
    code = "".join(graph.code for graph in graphs)
    assert "deformable_detr_ops.ms_deform_attn" in code and "grid_sample" not in code


def call_op(*inputs: torch.Tensor) -> torch.Tensor:
    return torch.ops.deformable_detr_ops.ms_deform_attn(*inputs)


def test_wrong_value_rank_names_the_argument() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE)
    with pytest.raises(RuntimeError, match=r"value must be \[N, S, M, D\]"):
        call_op(value.flatten(2), spatial_shapes, level_start_index, locations, weights)


def test_mismatched_attention_weights_shape_is_reported() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE)
    with pytest.raises(RuntimeError, match="attention_weights must be"):
        call_op(value, spatial_shapes, level_start_index, locations, weights[..., :1])


def test_level_table_that_does_not_fit_value_is_reported() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE)
    too_large = spatial_shapes.clone()
    too_large[-1, 0] += 1  # the last level now runs past the end of value
    with pytest.raises(RuntimeError, match="level 3 of size 2x2"):
        call_op(value, too_large, level_start_index, locations, weights)


def test_int32_spatial_shapes_are_rejected() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE)
    with pytest.raises(RuntimeError, match="must be int64"):
        call_op(value, spatial_shapes.int(), level_start_index, locations, weights)


def test_dtype_mismatch_in_the_raw_op_is_reported() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE)
    with pytest.raises(RuntimeError, match="must share one dtype"):
        call_op(value.float(), spatial_shapes, level_start_index, locations, weights)


def test_integer_value_is_rejected() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(ENCODER_LIKE)
    with pytest.raises(RuntimeError, match="floating-point"):
        call_op(value.long(), spatial_shapes, level_start_index, locations.long(), weights.long())


# spatial_shapes [[6, 8], [3, 4]] (S = 60) with the level table broken in each of the two ways the op must reject.
MISMATCHED_LEVEL_TABLES = {
    "second_level_starts_at_5_not_48": dict(level_start_index=[0, 5], num_values=60),
    "levels_cover_60_of_61_positions": dict(level_start_index=[0, 48], num_values=61),
}


@pytest.mark.parametrize("case", sorted(MISMATCHED_LEVEL_TABLES))
def test_level_start_index_that_does_not_match_spatial_shapes_is_rejected_by_kernel_and_reference(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    level_start_index = torch.tensor(MISMATCHED_LEVEL_TABLES[case]["level_start_index"])
    num_values = MISMATCHED_LEVEL_TABLES[case]["num_values"]
    value, spatial_shapes, _, locations, weights = make_inputs([(6, 8), (3, 4)], num_queries=3)
    value = torch.cat([value, value[:, : num_values - value.shape[1]]], dim=1)
    assert value.shape[1] == num_values
    inputs = (value, spatial_shapes, level_start_index, locations, weights)
    expected_message = (
        f"ms_deform_attn: level_start_index {level_start_index.tolist()} does not match spatial_shapes "
        f"[[6, 8], [3, 4]] and value's S = {num_values}: level_start_index must be [0, 48] (the exclusive "
        f"cumulative sum of h * w) and the sum of h * w (60) must equal S"
    )
    messages = {}
    for impl in ("kernel", "reference"):
        monkeypatch.setenv(ops._build.IMPL_ENV, impl)
        with pytest.raises(ValueError) as raised:
            ops.ms_deform_attn(*inputs)
        messages[impl] = str(raised.value)
    assert messages == {"kernel": expected_message, "reference": expected_message}
    grad_output = torch.zeros(2, 3, 2 * 4, dtype=value.dtype)
    with pytest.raises(ValueError, match=r"level_start_index \[0, (5|48)\] does not match"):
        torch.ops.deformable_detr_ops.ms_deform_attn_backward(grad_output, *inputs)


def test_level_start_index_that_matches_spatial_shapes_is_accepted_by_kernel_and_reference() -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs([(6, 8), (3, 4)], num_queries=3)
    assert level_start_index.tolist() == [0, 48] and value.shape[1] == 60
    # A strided view of the same offsets is as good as a contiguous tensor.
    strided_index = torch.tensor([0, -1, 48, -1])[::2]
    assert not strided_index.is_contiguous()
    inputs = (value, spatial_shapes, strided_index, locations, weights)
    kernel_output, kernel_grads = output_and_grads(ops.ms_deform_attn, inputs)
    reference_output, reference_grads = output_and_grads(ops.ms_deform_attn_reference, inputs)
    torch.testing.assert_close(kernel_output, reference_output, atol=1e-10, rtol=1e-10)
    for name, kernel_grad, reference_grad in zip(GRAD_NAMES, kernel_grads, reference_grads):
        torch.testing.assert_close(kernel_grad, reference_grad, atol=1e-9, rtol=1e-10, msg=name)


NAN, INF = float("nan"), float("inf")
ENCODER_LIKE_STARTS = [0, 12 * 16, 12 * 16 + 6 * 8, 12 * 16 + 6 * 8 + 3 * 4]
EVERYWHERE = slice(None)
# Each case writes NaN or infinity (after, where needed, a location) into the inputs: (input, index, number).
# Sample (batch 0, query 1, head 0, level 0, point 0) sits at (0.4, 0.6), inside level 0 (12x16 pixels).
NON_FINITE_CASES = {
    "nan_location_x": [("locations", (0, 1, 0, 0, 0, 0), NAN)],
    "nan_location_y_of_a_point_outside": [
        ("locations", (0, 1, 0, 0, 0, 0), 3.0), ("locations", (0, 1, 0, 0, 0, 1), NAN)
    ],
    "inf_location_x": [("locations", (0, 1, 0, 0, 0, 0), INF)],
    "minus_inf_location_y": [("locations", (0, 1, 0, 0, 0, 1), -INF)],
    "nan_weight": [("weights", (0, 1, 0, 0, 0), NAN)],
    "inf_weight": [("weights", (0, 1, 0, 0, 0), INF)],
    "inf_weight_of_a_point_outside": [("locations", (0, 1, 0, 0, 0), -2.0), ("weights", (0, 1, 0, 0, 0), INF)],
    # pixel (7, 6) of level 0, next to the sample at (0.4, 0.6), channel 1 of head 0
    "nan_value": [("value", (0, 7 * 16 + 6, 0, 1), NAN)],
    # the first pixel of every level, where the kernel points the corners that lie outside the image
    "nan_value_at_each_level_start": [
        ("value", (EVERYWHERE, start, EVERYWHERE, EVERYWHERE), NAN) for start in ENCODER_LIKE_STARTS
    ],
    "nan_grad_output": [("grad_output", (1, 2, 3), NAN)],
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(NON_FINITE_CASES))
def test_nan_and_infinity_propagate_like_the_reference_forward_and_backward(case: str, dtype: torch.dtype) -> None:
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        ENCODER_LIKE, batch=2, num_queries=6, heads=2, channels=4, points=3, dtype=dtype
    )
    assert level_start_index.tolist() == ENCODER_LIKE_STARTS
    locations[0, 1, 0, 0, 0] = torch.tensor([0.4, 0.6], dtype=dtype)
    grad_output = torch.randn(2, 6, 2 * 4, generator=torch.Generator().manual_seed(7), dtype=dtype)
    writable = dict(value=value, locations=locations, weights=weights, grad_output=grad_output)
    for name, index, number in NON_FINITE_CASES[case]:
        writable[name][index] = number
    op_inputs = (value, spatial_shapes, level_start_index, locations, weights)
    kernel = output_and_grads(ops.ms_deform_attn, op_inputs, grad_output)
    reference = output_and_grads(ops.ms_deform_attn_reference, op_inputs, grad_output)
    names = ("output",) + GRAD_NAMES
    kernel, reference = [kernel[0], *kernel[1]], [reference[0], *reference[1]]
    assert any(tensor.isnan().any() for tensor in reference), "the case must reach a NaN in the reference"
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    for name, actual, expected in zip(names, kernel, reference):
        # NaN exactly where the reference has NaN, the same infinities, and the finite values close.
        torch.testing.assert_close(actual, expected, equal_nan=True, atol=16 * tolerance, rtol=tolerance, msg=name)
