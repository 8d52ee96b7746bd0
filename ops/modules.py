"""`MSDeformAttn`: the multi-scale deformable attention layer, with the authors' parameter names."""

import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from .dispatch import ms_deform_attn


class MSDeformAttn(nn.Module):
    """Each query attends to `n_points` sampled locations per head and level around its reference point.

    Args:
        d_model: hidden size C; must be divisible by `n_heads`.
        n_levels: number of feature levels L.
        n_heads: number of attention heads M.
        n_points: sampling points P per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        for name, number in (("d_model", d_model), ("n_levels", n_levels), ("n_heads", n_heads), ("n_points", n_points)):
            if not isinstance(number, int) or number <= 0:
                raise ValueError(f"MSDeformAttn: {name} must be a positive integer, got {number!r}")
        if d_model % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        head_dim = d_model // n_heads
        if head_dim & (head_dim - 1) != 0:
            warnings.warn(
                f"MSDeformAttn: {head_dim} channels per head is not a power of 2; "
                "the CUDA kernel is fastest with a power of 2",
                stacklevel=2,
            )
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Offsets start on a ring of n_heads directions (scaled to the unit square's border), the k-th
        # point k times further out, so that heads and points cover different neighbourhoods at first.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        point_scale = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        offsets = directions.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1) * point_scale
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(offsets.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query: [N, Lq, C].
            reference_points: [N, Lq, L, 2] (x, y) in [0, 1], or [N, Lq, L, 4] (cx, cy, w, h) boxes.
            input_flatten: [N, S, C], all levels flattened, S = sum(h * w).
            input_spatial_shapes: int64 [L, 2], (h, w) per level.
            input_level_start_index: int64 [L], [0, h0*w0, h0*w0+h1*w1, ...].
            input_padding_mask: bool [N, S], True at padding.

        Returns:
            [N, Lq, C]
        """
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(f"MSDeformAttn: query must be [N, Lq, {self.d_model}], got {list(query.shape)}")
        if input_flatten.dim() != 3 or input_flatten.shape[-1] != self.d_model:
            raise ValueError(
                f"MSDeformAttn: input_flatten must be [N, S, {self.d_model}], got {list(input_flatten.shape)}"
            )
        batch, num_queries, _ = query.shape
        _, num_values, _ = input_flatten.shape
        if input_spatial_shapes.shape != (self.n_levels, 2):
            raise ValueError(
                f"MSDeformAttn: input_spatial_shapes must be [{self.n_levels}, 2], got {list(input_spatial_shapes.shape)}"
            )
        if reference_points.shape[:-1] != (batch, num_queries, self.n_levels) or reference_points.shape[-1] not in (2, 4):
            raise ValueError(
                f"MSDeformAttn: reference_points must be [N, Lq, {self.n_levels}, 2] (points) or [..., 4] (boxes) "
                f"with N={batch}, Lq={num_queries}, got {list(reference_points.shape)}"
            )
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(batch, num_values, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(batch, num_queries, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, dim=-1).view(batch, num_queries, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            locations = self._point_locations(reference_points, offsets, input_spatial_shapes)
        else:
            # offsets are relative to the reference box: half its size spread over the points
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        output = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights)
        return self.output_proj(output)

    def _point_locations(
        self, reference_points: torch.Tensor, offsets: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> torch.Tensor:
        """reference [N, Lq, L, 2] + offsets [N, Lq, M, L, P, 2] / (w, h) of each level -> [N, Lq, M, L, P, 2].

        Offsets are in pixels of each level. The arithmetic is the authors' broadcast, element for element, but
        over rows of L * P * 2 contiguous values: broadcasting a [L, 1, 2] divisor over rows of 2 runs ~6x slower
        on the CPU. The divisor takes the offsets' dtype and the quotient the sum's dtype, as type promotion does.
        """
        batch, num_queries, _, _ = reference_points.shape
        row = self.n_levels * self.n_points * 2
        width_height = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], dim=-1).to(offsets.dtype)
        divisor = width_height[None, :, None, :].expand(self.n_heads, self.n_levels, self.n_points, 2)
        quotient = offsets.reshape(batch, num_queries, self.n_heads, row) / divisor.reshape(self.n_heads, row)
        reference = reference_points[:, :, None, :, None, :].expand(batch, num_queries, 1, self.n_levels, self.n_points, 2)
        dtype = torch.promote_types(reference_points.dtype, offsets.dtype)
        locations = reference.reshape(batch, num_queries, 1, row).to(dtype) + quotient.to(dtype)
        return locations.view(batch, num_queries, self.n_heads, self.n_levels, self.n_points, 2)
