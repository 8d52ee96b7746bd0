"""The Python halves of the dispatcher registration: fake (meta) kernels and autograd."""

import torch

_REGISTERED = False


def _fake_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    batch, _, heads, channels = value.shape
    return value.new_empty((batch, sampling_locations.shape[1], heads * channels))


def _fake_backward(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.deformable_detr_ops.ms_deform_attn_backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    # No gradient for the integer level tables.
    return grad_value, None, None, grad_locations, grad_weights


def register_python_parts() -> None:
    """Registers once, after the C++ library has defined the ops."""
    global _REGISTERED
    if _REGISTERED:
        return
    torch.library.register_fake("deformable_detr_ops::ms_deform_attn")(_fake_forward)
    torch.library.register_fake("deformable_detr_ops::ms_deform_attn_backward")(_fake_backward)
    torch.library.register_autograd(
        "deformable_detr_ops::ms_deform_attn", _backward, setup_context=_setup_context
    )
    _REGISTERED = True
