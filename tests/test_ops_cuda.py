"""The CUDA kernel: it compiles and links for sm_80 and sm_90 with no GPU; on a GPU it equals the CPU kernel."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ops
from conftest import REPO_ROOT

# Registers the CUDA build (no GPU needed) and reports whether the CUDA implementation reached the dispatcher.
BUILD_SCRIPT = """
import sys
from pathlib import Path
import torch
from ops import _build
_build.build_library(Path(sys.argv[1]), with_cuda=True)
for name in ("ms_deform_attn", "ms_deform_attn_backward"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"deformable_detr_ops::{name}", "CUDA"), name
print("CUDA KERNELS REGISTERED")
"""


def cuda_toolkit_root(nvcc: str) -> Path:
    """The toolkit nvcc really runs from: nvcc may be a wrapper script, so ask nvcc itself (its dry run
    prints the folder of the real binary as _HERE_) instead of taking the wrapper's parent folder."""
    dry_run = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
    for line in dry_run.stdout.splitlines() + dry_run.stderr.splitlines():
        if line.startswith("#$ _HERE_="):
            return Path(line.split("=", 1)[1].strip()).resolve().parent
    raise AssertionError(f"`{nvcc} --dryrun` did not say where it runs from:\n{dry_run.stderr}")


@pytest.mark.slow
def test_cuda_sources_compile_and_link_for_sm80_and_sm90(tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the CUDA build cannot be checked here")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DDETR_MSDA_")}
    env.update({
        "CUDA_HOME": str(cuda_toolkit_root(nvcc)),
        "TORCH_CUDA_ARCH_LIST": "8.0;9.0",
        "MAX_JOBS": "2",
        "PYTHONPATH": REPO_ROOT,
    })
    build_dir = tmp_path / "build"
    result = subprocess.run(
        [sys.executable, "-c", BUILD_SCRIPT, str(build_dir)], env=env, cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CUDA KERNELS REGISTERED" in result.stdout
    ninja_file = (build_dir / "build.ninja").read_text()
    assert "ms_deform_attn_cuda.cu" in ninja_file
    assert "code=sm_80" in ninja_file and "code=sm_90" in ninja_file
    assert list(build_dir.glob("*.so"))


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_inputs(dtype: torch.dtype, num_queries: int = 50, channels: int = 30) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor([[12, 16], [6, 8], [3, 4], [1, 1]])
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(2, int(sizes.sum()), 4, channels, generator=generator, dtype=dtype)
    locations = torch.rand(2, num_queries, 4, 4, 3, 2, generator=generator, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(2, num_queries, 4, 4, 3, generator=generator, dtype=dtype)
    return value, spatial_shapes, level_start_index, locations, weights


def output_and_grads(inputs: tuple[torch.Tensor, ...], device: str) -> list[torch.Tensor]:
    value, spatial_shapes, level_start_index, locations, weights = (tensor.to(device) for tensor in inputs)
    leaves = [tensor.detach().requires_grad_() for tensor in (value, locations, weights)]
    output = ops.ms_deform_attn(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
    grad_output = torch.linspace(-1, 1, output.numel(), dtype=output.dtype, device=device).view(output.shape)
    return [output.detach().cpu()] + [grad.cpu() for grad in torch.autograd.grad(output, leaves, grad_output)]


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("channels", [30, 32])  # 32: the backward sums each sample's gradients per warp
@pytest.mark.parametrize(
    "dtype,tolerance",
    [(torch.float64, 1e-10), (torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)],
)
def test_cuda_kernel_equals_cpu_kernel(dtype: torch.dtype, tolerance: float, channels: int) -> None:
    assert ops.kernel_available()
    inputs = make_inputs(dtype, channels=channels)
    # The CPU kernel runs the same arithmetic with the same float accumulation for half and bfloat16.
    names = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")
    for name, on_gpu, on_cpu in zip(names, output_and_grads(inputs, "cuda"), output_and_grads(inputs, "cpu")):
        assert on_gpu.dtype == dtype
        scale = on_cpu.abs().max().float().item()
        torch.testing.assert_close(on_gpu.float(), on_cpu.float(), atol=tolerance * scale, rtol=tolerance, msg=name)


@pytest.mark.gpu
@requires_gpu
def test_cuda_opcheck() -> None:
    assert ops.kernel_available()
    value, spatial_shapes, level_start_index, locations, weights = (
        tensor.cuda() for tensor in make_inputs(torch.float32, num_queries=5)
    )
    torch.library.opcheck(
        torch.ops.deformable_detr_ops.ms_deform_attn.default,
        (value.requires_grad_(), spatial_shapes, level_start_index, locations.requires_grad_(),
         weights.requires_grad_()),
    )


@pytest.mark.gpu
@requires_gpu
def test_inputs_on_two_devices_are_rejected() -> None:
    assert ops.kernel_available()
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(torch.float32)
    with pytest.raises(RuntimeError, match="all inputs must be on one device"):
        torch.ops.deformable_detr_ops.ms_deform_attn(
            value.cuda(), spatial_shapes.cuda(), level_start_index.cuda(), locations, weights.cuda()
        )


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("channels", [30, 32])  # 32: the backward sums each sample's gradients per warp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_kernel_propagates_nan_and_infinity_like_the_cpu_kernel(dtype: torch.dtype, channels: int) -> None:
    assert ops.kernel_available()
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(dtype, channels=channels)
    locations[0, 1, 0, 0, 0, 0] = float("nan")
    locations[1, 3, 2, 1, 1, 1] = float("inf")
    locations[0, 2, 1, 0, 0] = -2.0  # a point outside the image, with an infinite weight
    weights[0, 2, 1, 0, 0] = float("inf")
    locations[1, 4, 3, 2, 2] = 0.5  # a point inside the image, with a NaN weight
    weights[1, 4, 3, 2, 2] = float("nan")
    value[1, 10, 0, 5] = float("nan")
    # where the corners outside the image point (but for the last level, 1x1, whose every point reads it)
    value[:, level_start_index[:-1]] = float("nan")
    inputs = (value, spatial_shapes, level_start_index, locations, weights)
    names = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    for name, on_gpu, on_cpu in zip(names, output_and_grads(inputs, "cuda"), output_and_grads(inputs, "cpu")):
        assert on_cpu.isnan().any() and on_cpu.isfinite().any(), name
        scale = on_cpu[on_cpu.isfinite()].abs().max().item()
        torch.testing.assert_close(on_gpu, on_cpu, equal_nan=True, atol=tolerance * scale, rtol=tolerance, msg=name)


# A level_start_index that does not match spatial_shapes: the reference raises; the CUDA kernel, which does
# not read the table on the host, stops with a device-side assert (which leaves the process's CUDA context
# unusable, hence a separate process).
MISMATCHED_INDEX_SCRIPT = """
import torch
import ops
assert ops.kernel_available()
shapes = torch.tensor([[6, 8], [3, 4]], device="cuda")
starts = torch.tensor([0, 5], device="cuda")
value = torch.randn(1, 60, 2, 4, device="cuda")
locations = torch.rand(1, 3, 2, 2, 2, 2, device="cuda")
weights = torch.rand(1, 3, 2, 2, 2, device="cuda")
try:
    ops.ms_deform_attn_reference(value, shapes, starts, locations, weights)
except ValueError as error:
    print("REFERENCE RAISED:", error, flush=True)
torch.ops.deformable_detr_ops.ms_deform_attn(value, shapes, starts, locations, weights)
torch.cuda.synchronize()
print("KERNEL NOT STOPPED", flush=True)
"""


@pytest.mark.gpu
@requires_gpu
def test_mismatched_level_start_index_stops_the_cuda_kernel() -> None:
    assert ops.kernel_available()  # builds here, so that the process below finds the build
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", MISMATCHED_INDEX_SCRIPT], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert "REFERENCE RAISED: ms_deform_attn: level_start_index [0, 5] does not match spatial_shapes" in output
    assert result.returncode != 0 and "KERNEL NOT STOPPED" not in output, output
    assert "device-side assert" in output and "exclusive cumulative sum of h * w" in output, output
