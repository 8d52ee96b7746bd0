"""Multi-scale deformable attention: compiled kernels (CPU, CUDA) and a pure-PyTorch reference.

`ms_deform_attn` runs the compiled op `torch.ops.deformable_detr_ops.ms_deform_attn` (built on first use,
see `ops._build`) and falls back to `ms_deform_attn_reference` only where no compiler is available.
"""

import torch

from . import _build
from .modules import MSDeformAttn
from .reference import ms_deform_attn_reference


def kernel_available() -> bool:
    """Whether the compiled kernel is loaded in this process (loading it on the first call)."""
    return _build.ensure_loaded()


def ms_deform_attn(
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
        level_start_index: int64 [L], [0, h0*w0, h0*w0+h1*w1, ...].
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) in [0, 1], (0, 0) the top-left image corner.
        attention_weights: [N, Lq, M, L, P].

    Returns:
        [N, Lq, M * D] in the promoted dtype of the three floating inputs (mixed precision, e.g. a half value
        with float32 locations, computes in float32 rather than rounding the locations).
    """
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    value, sampling_locations, attention_weights = (
        value.to(dtype),
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
    )
    # Under torch.compile the kernel must have been loaded beforehand (MSDeformAttn does so when built);
    # building is file I/O that cannot be traced.
    loaded = _build.STATE.loaded if torch.compiler.is_compiling() else _build.ensure_loaded()
    if loaded:
        return torch.ops.deformable_detr_ops.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


__all__ = ["MSDeformAttn", "kernel_available", "ms_deform_attn", "ms_deform_attn_reference"]
