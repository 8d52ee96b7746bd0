"""Multi-scale deformable attention: compiled kernels (CPU, CUDA) and a pure-PyTorch reference.

`ms_deform_attn` (in `ops.dispatch`) runs the compiled op `torch.ops.deformable_detr_ops.ms_deform_attn`
wherever it loads, and `ms_deform_attn_reference` when `DDETR_MSDA_IMPL=reference` or where no compiler is
available. `MSDeformAttn` is the layer, with the authors' parameter names.
"""

from .dispatch import kernel_available, ms_deform_attn
from .modules import MSDeformAttn
from .reference import ms_deform_attn_reference

__all__ = ["MSDeformAttn", "kernel_available", "ms_deform_attn", "ms_deform_attn_reference"]
