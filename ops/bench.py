"""Times multi-scale deformable attention: the compiled kernel against the pure-PyTorch reference.

Run from the repository root: `python -m ops.bench` (CPU, 2 threads) or `python -m ops.bench --device cuda`.
Sizes are Deformable DETR's at batch 1: levels 64x64, 32x32, 16x16, 8x8 (S = 5440), 8 heads x 32 channels,
4 points; the encoder has Lq = S queries, the decoder 300.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import ops

LEVELS = [(64, 64), (32, 32), (16, 16), (8, 8)]
HEADS, CHANNELS, POINTS = 8, 32, 4
QUERIES = {"encoder": sum(h * w for h, w in LEVELS), "decoder": 300}


def make_inputs(num_queries: int, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor(LEVELS, dtype=torch.int64)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(batch, int(sizes.sum()), HEADS, CHANNELS, generator=generator)
    locations = torch.rand(batch, num_queries, HEADS, len(LEVELS), POINTS, 2, generator=generator) * 1.1 - 0.05
    weights = torch.rand(batch, num_queries, HEADS, len(LEVELS), POINTS, generator=generator).softmax(-1)
    floats = [tensor.to(device=device, dtype=dtype) for tensor in (value, locations, weights)]
    return floats[0], spatial_shapes.to(device), level_start_index.to(device), floats[1], floats[2]


def median_ms(step: Callable[[], None], device: torch.device, repeats: int) -> float:
    step()  # warm-up: first-call allocations, lazy loading
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def time_function(function, inputs: tuple[torch.Tensor, ...], device: torch.device, repeats: int) -> tuple[float, float]:
    """(forward ms, forward + backward ms), medians over `repeats` runs."""
    value, spatial_shapes, level_start_index, locations, weights = inputs
    leaves = [tensor.detach().requires_grad_() for tensor in (value, locations, weights)]

    def forward() -> None:
        with torch.no_grad():
            function(value, spatial_shapes, level_start_index, locations, weights)

    def forward_backward() -> None:
        output = function(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
        torch.autograd.grad(output.sum(), leaves)

    return median_ms(forward, device, repeats), median_ms(forward_backward, device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default=None, help="comma-separated; default float32 (CPU), float32,bfloat16 (CUDA)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if not ops.kernel_available():
        raise SystemExit("the compiled kernel is not available; nothing to compare")
    dtype_names = args.dtypes or ("float32,bfloat16" if device.type == "cuda" else "float32")
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {args.threads} threads")
          + f", batch {args.batch}, median of {args.repeats}")
    print(f"{'case':<8} {'dtype':<9} {'ref fwd':>9} {'ker fwd':>9} {'ratio':>6} {'ref f+b':>9} {'ker f+b':>9} {'ratio':>6}")
    for name, num_queries in QUERIES.items():
        for dtype_name in dtype_names.split(","):
            dtype = getattr(torch, dtype_name)
            inputs = make_inputs(num_queries, args.batch, device, dtype)
            reference = time_function(ops.ms_deform_attn_reference, inputs, device, args.repeats)
            kernel = time_function(ops.ms_deform_attn, inputs, device, args.repeats)
            print(
                f"{name:<8} {dtype_name:<9} {reference[0]:>7.2f}ms {kernel[0]:>7.2f}ms {reference[0] / kernel[0]:>5.1f}x"
                f" {reference[1]:>7.2f}ms {kernel[1]:>7.2f}ms {reference[1] / kernel[1]:>5.1f}x"
            )


if __name__ == "__main__":
    main()
