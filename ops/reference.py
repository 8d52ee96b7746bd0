"""Multi-scale deformable attention in pure PyTorch: the ground truth for the compiled kernels."""

import torch
import torch.nn.functional as F


def check_level_start_index(shapes: list[list[int]], starts: list[int], num_values: int) -> None:
    """Raises ValueError unless `starts` is the exclusive cumulative sum of h * w over `shapes` and the levels
    cover `num_values` (S) exactly; the message is the compiled kernel's (ops/csrc/checks.h).

    Args:
        shapes: spatial_shapes as a list, [[h, w], ...].
        starts: level_start_index as a list.
        num_values: value.shape[1].
    """
    expected = []
    total = 0
    for height, width in shapes:
        expected.append(total)
        total += height * width
    if starts != expected or total != num_values:
        raise ValueError(
            f"ms_deform_attn: level_start_index {starts} does not match spatial_shapes {shapes} and value's "
            f"S = {num_values}: level_start_index must be {expected} (the exclusive cumulative sum of h * w) "
            f"and the sum of h * w ({total}) must equal S"
        )


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinear sampling (zero padding) of every level, weighted and summed over levels and points.

    Args:
        value: [N, S, M, D], the flattened feature maps of all levels, per head.
        spatial_shapes: int64 [L, 2], (height, width) of each level; S = sum(h * w).
        level_start_index: int64 [L], [0, h0*w0, h0*w0+h1*w1, ...]; checked against spatial_shapes (the
            split below uses the level sizes).
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) in [0, 1], (0, 0) the top-left image corner.
        attention_weights: [N, Lq, M, L, P].

    Returns:
        [N, Lq, M * D]

    Raises:
        ValueError: level_start_index does not match spatial_shapes, or the levels do not cover S.
    """
    batch, num_values, heads, channels = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    shape_list = spatial_shapes.tolist()
    check_level_start_index(shape_list, level_start_index.tolist(), num_values)
    shapes = [(int(h), int(w)) for h, w in shape_list]
    value_per_level = value.split([h * w for h, w in shapes], dim=1)
    # grid_sample wants coordinates in [-1, 1], with align_corners=False mapping -1 to the left image edge.
    grids = 2 * sampling_locations - 1
    sampled_per_level = []
    for level, (height, width) in enumerate(shapes):
        # [N, h*w, M, D] -> [N*M, D, h, w]
        level_value = value_per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, channels, height, width)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # -> [N*M, D, Lq, P]
        sampled_per_level.append(
            F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # [N*M, D, Lq, L*P] weighted by [N*M, 1, Lq, L*P]
    sampled = torch.stack(sampled_per_level, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, num_queries, num_levels * num_points)
    output = (sampled * weights).sum(-1).view(batch, heads * channels, num_queries)
    return output.transpose(1, 2).contiguous()
