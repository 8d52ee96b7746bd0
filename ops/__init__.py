"""Multi-scale deformable attention: compiled kernels (CPU, CUDA) and a pure-PyTorch reference."""

from .modules import MSDeformAttn
from .reference import ms_deform_attn_reference


def kernel_available() -> bool:
    """Whether the compiled kernel is loaded in this process."""
    return False


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """[N, Lq, M*D] from value [N, S, M, D]; see `ms_deform_attn_reference` for the shapes."""
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


__all__ = ["MSDeformAttn", "kernel_available", "ms_deform_attn", "ms_deform_attn_reference"]
