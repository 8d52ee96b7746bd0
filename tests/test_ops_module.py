"""`ops.MSDeformAttn`: the authors' parameter names and initialisation, argument checks, kernel = reference."""

import math

import pytest
import torch

import ops
from fixtures.model_reference import reference_path

LEVEL_SHAPES = torch.tensor([[8, 6], [4, 3], [2, 2], [1, 1]])
LEVEL_START = torch.tensor([0, 48, 60, 64])
NUM_VALUES = 65


def read_official_keys(prefix: str) -> dict[str, list[int]]:
    """Parameter name -> shape of one attention layer in the authors' state_dict."""
    shapes = {}
    with open(reference_path("keys_base.tsv"), encoding="utf-8") as keys:
        for line in keys:
            key, shape, _ = line.rstrip("\n").split("\t")
            if key.startswith(prefix):
                shapes[key[len(prefix):]] = [int(size) for size in shape.strip("[]").split(",")]
    return shapes


def test_parameter_names_and_shapes_match_the_official_state_dict() -> None:
    official = read_official_keys("transformer.encoder.layers.0.self_attn.")
    assert len(official) == 8
    layer = ops.MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4)
    assert {name: list(tensor.shape) for name, tensor in layer.state_dict().items()} == official


def test_sampling_offsets_start_on_a_ring_growing_with_the_point_index() -> None:
    layer = ops.MSDeformAttn(d_model=64, n_levels=3, n_heads=8, n_points=4)
    assert layer.sampling_offsets.weight.abs().max() == 0
    offsets = layer.sampling_offsets.bias.detach().view(8, 3, 4, 2)
    # Head 0 points right, head 1 along the diagonal, head 2 down, head 4 left (scaled to the unit square).
    expected_directions = {0: (1.0, 0.0), 1: (1.0, 1.0), 2: (0.0, 1.0), 4: (-1.0, 0.0), 6: (0.0, -1.0)}
    for head, direction in expected_directions.items():
        for point in range(4):
            expected = torch.tensor(direction) * (point + 1)
            for level in range(3):
                torch.testing.assert_close(offsets[head, level, point], expected, atol=1e-6, rtol=0)
    # Every direction lies on the border of the unit square: its larger coordinate is +-1.
    torch.testing.assert_close(offsets[:, :, 0].abs().amax(-1), torch.ones(8, 3))


def test_attention_weights_start_at_zero_and_projections_are_xavier() -> None:
    torch.manual_seed(0)
    layer = ops.MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4)
    assert layer.attention_weights.weight.abs().max() == 0 and layer.attention_weights.bias.abs().max() == 0
    bound = math.sqrt(6.0 / (256 + 256))
    for projection in (layer.value_proj, layer.output_proj):
        assert projection.bias.abs().max() == 0
        weight = projection.weight.detach()
        assert weight.abs().max() <= bound
        # A uniform distribution on [-bound, bound] has standard deviation bound / sqrt(3).
        assert abs(weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound


@pytest.mark.parametrize(
    "arguments,message",
    [
        (dict(d_model=250, n_heads=8), "must be divisible by n_heads"),
        (dict(n_levels=0), "n_levels must be a positive integer"),
        (dict(n_points=2.5), "n_points must be a positive integer"),
    ],
)
def test_invalid_arguments_raise_value_errors(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ops.MSDeformAttn(**arguments)


def test_head_size_that_is_not_a_power_of_two_warns() -> None:
    with pytest.warns(UserWarning, match="30 channels per head is not a power of 2"):
        ops.MSDeformAttn(d_model=240, n_heads=8)


def make_call(reference_size: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    reference_points = torch.rand(2, 7, 4, reference_size, generator=generator, dtype=dtype)
    if reference_size == 4:
        reference_points[..., 2:] *= 0.5  # box sizes
    return dict(
        query=torch.randn(2, 7, 32, generator=generator, dtype=dtype),
        reference_points=reference_points,
        input_flatten=torch.randn(2, NUM_VALUES, 32, generator=generator, dtype=dtype),
        input_spatial_shapes=LEVEL_SHAPES,
        input_level_start_index=LEVEL_START,
    )


def randomised_layer(dtype: torch.dtype = torch.float64) -> ops.MSDeformAttn:
    """A layer whose attention weights are not all equal (they start at zero)."""
    torch.manual_seed(1)
    layer = ops.MSDeformAttn(d_model=32, n_levels=4, n_heads=4, n_points=3).to(dtype)
    with torch.no_grad():
        layer.attention_weights.weight.normal_(std=0.3)
        layer.sampling_offsets.weight.normal_(std=0.3)
    return layer


@pytest.mark.parametrize("reference_size", [2, 4])
def test_forward_gives_query_shaped_output(reference_size: int) -> None:
    output = randomised_layer()(**make_call(reference_size))
    assert output.shape == (2, 7, 32) and torch.isfinite(output).all()


def test_padding_mask_hides_the_masked_values() -> None:
    layer = randomised_layer()
    call = make_call(2)
    mask = torch.zeros(2, NUM_VALUES, dtype=torch.bool)
    mask[:, 40:48] = True
    changed = dict(call, input_flatten=call["input_flatten"].clone())
    changed["input_flatten"][:, 40:48] += 100.0
    torch.testing.assert_close(layer(**changed, input_padding_mask=mask), layer(**call, input_padding_mask=mask))
    assert not torch.allclose(layer(**changed), layer(**call))


@pytest.mark.parametrize("reference_size", [2, 4])
def test_kernel_and_reference_give_the_same_layer_output_and_gradients(
    reference_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not ops.kernel_available():
        pytest.skip(f"compiled kernel not available here: {ops._build.STATE.origin}")
    layer = randomised_layer()
    call = make_call(reference_size)

    def output_and_grads() -> list[torch.Tensor]:
        layer.zero_grad()
        output = layer(**call)
        output.pow(2).sum().backward()
        return [output.detach()] + [parameter.grad.clone() for parameter in layer.parameters()]

    monkeypatch.setenv(ops._build.IMPL_ENV, "auto")  # by default the layer runs the compiled kernel
    with_kernel = output_and_grads()
    monkeypatch.setenv(ops._build.IMPL_ENV, "reference")  # the authors' pure-PyTorch arithmetic
    with_reference = output_and_grads()
    for kernel_result, reference_result in zip(with_kernel, with_reference):
        torch.testing.assert_close(kernel_result, reference_result, atol=1e-10, rtol=1e-10)
    assert not all(torch.equal(a, b) for a, b in zip(with_kernel, with_reference)), "both runs took one path"


def test_wrong_query_width_is_reported() -> None:
    call = make_call(2)
    call["query"] = call["query"][..., :16]
    with pytest.raises(ValueError, match=r"query must be \[N, Lq, 32\], got \[2, 7, 16\]"):
        randomised_layer()(**call)


def test_wrong_number_of_levels_is_reported() -> None:
    call = make_call(2)
    call["input_spatial_shapes"] = LEVEL_SHAPES[:3]
    with pytest.raises(ValueError, match=r"input_spatial_shapes must be \[4, 2\]"):
        randomised_layer()(**call)


def test_reference_points_of_the_wrong_shape_are_reported() -> None:
    call = make_call(2)
    call["reference_points"] = call["reference_points"][..., :1]
    with pytest.raises(ValueError, match="reference_points must be"):
        randomised_layer()(**call)


@pytest.mark.parametrize("offset_dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_point_locations_equal_the_authors_broadcast_bit_for_bit(offset_dtype: torch.dtype) -> None:
    # The layer divides over contiguous rows for speed; each element must be the authors' expression exactly,
    # with the dtypes that autocast (bf16 offsets, float32 references) and float64 runs give.
    layer = ops.MSDeformAttn(d_model=32, n_levels=3, n_heads=2, n_points=3)
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[22, 21], [11, 7], [3, 300]])
    reference_dtype = torch.float64 if offset_dtype == torch.float64 else torch.float32
    reference = torch.rand(2, 5, 3, 2, generator=generator, dtype=reference_dtype)
    offsets = (torch.randn(2, 5, 2, 3, 3, 2, generator=generator) * 4).to(offset_dtype).requires_grad_()
    normalizer = torch.stack([shapes[..., 1], shapes[..., 0]], dim=-1)
    expected = reference[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    locations = layer._point_locations(reference, offsets, shapes)
    assert locations.dtype == expected.dtype and locations.shape == expected.shape
    assert torch.equal(locations, expected)
    upstream = torch.randn(expected.shape, generator=generator, dtype=expected.dtype)
    (expected_grad,) = torch.autograd.grad(expected, offsets, upstream)
    (grad,) = torch.autograd.grad(locations, offsets, upstream)
    assert torch.equal(grad, expected_grad)
