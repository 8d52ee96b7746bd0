"""The one place that picks the compiled kernel or the pure-PyTorch reference for multi-scale deformable attention.

The compiled kernel is used wherever it loads (installed by `pip install ./ops`, or built on first use, see
`ops._build`); the reference is used when `DDETR_MSDA_IMPL=reference` asks for the authors' arithmetic bit for
bit, or, with one warning, where no compiler is available to build the kernel.
"""

import torch

from . import _build
from .reference import ms_deform_attn_reference


def kernel_available() -> bool:
    """Whether calls use the compiled kernel (loading or building it on the first call).

    Call it once before `torch.compile`: building is file I/O that cannot be traced.
    """
    return _build.ensure_loaded()


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention through the compiled kernel, or the reference (see the module
    docstring); the arguments and their shapes are those of `ms_deform_attn_reference`.

    Returns:
        [N, Lq, M * D] in the promoted dtype of the three floating inputs (mixed precision, e.g. a half value
        with float32 locations, computes in float32 rather than rounding the locations). NaN and infinity
        propagate as in the reference on the CPU, forward and backward: a NaN or infinite location, a NaN
        attention weight, or a NaN pixel that a sample reads gives NaN in that query and head's output.

    Raises:
        ValueError: level_start_index is not the exclusive cumulative sum of h * w, or the levels do not cover
            S (the kernel on CPU tensors and the reference; the CUDA kernel checks on the device instead and
            stops with a device-side assert, without a host synchronisation).
    """
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    value, sampling_locations, attention_weights = (
        value.to(dtype),
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
    )
    use_kernel = bool(_build.STATE.loaded) if torch.compiler.is_compiling() else _build.ensure_loaded()
    if use_kernel:
        return torch.ops.deformable_detr_ops.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
