"""The number of target boxes that normalises the losses, averaged over all workers.

The launcher decides: horovod when it is initialised in this process, else torch.distributed when a
process group exists, else the local count. No flag: the trial may run under either.
"""

import importlib.util
import logging

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)
_warned_horovod_import = False


def _horovod():
    """horovod.torch if it is installed and initialised in this process, else None (never raises)."""
    global _warned_horovod_import
    if importlib.util.find_spec("horovod") is None:
        return None
    try:
        import horovod.torch as hvd
    except ImportError as error:  # installed but not built for this torch
        if not _warned_horovod_import:
            logger.warning("horovod is installed but horovod.torch does not import (%s); not using it", error)
            _warned_horovod_import = True
        return None
    return hvd if hvd.is_initialized() else None


def average_num_boxes(num_boxes: int | float, device: torch.device | str = "cpu") -> float:
    """Mean over workers of each worker's box count, at least 1 (the losses divide by it).

    Args:
        num_boxes: this worker's number of target boxes in its batch.
        device: where to place the tensor for the collective (the model's device; gloo needs CPU).
    """
    count = torch.as_tensor([float(num_boxes)], dtype=torch.float32, device=device)
    hvd = _horovod()
    if hvd is not None:
        count = hvd.allreduce(count, op=hvd.Average, name="num_boxes")
    elif dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return torch.clamp(count, min=1).item()
