"""One report on a GPU machine: the CUDA tests, the attention kernel against the reference, training throughput.

    python benchmarks/gpu_check.py           # `make gpu-check`, on a GPU: at most 8 minutes
    python benchmarks/gpu_check.py --smoke   # tiny sizes on the CPU: checks that this script still runs

1. `pytest -m gpu`: tests/test_ops_cuda.py and every other test marked gpu.
2. The compiled kernel against the pure-PyTorch reference, forward and backward, in float32, bfloat16 and
   float16, at Deformable DETR's sizes (`ops.bench.make_inputs`: 4 levels, 64x64 to 8x8; encoder and decoder
   queries). The reference runs in float64 on the same (rounded) inputs and output gradient; an error is
   max |kernel - reference| / max |reference|, for the output and each input's gradient.
3. Training steps at the COCO configuration (distributed_gcs.yaml: ResNet-50, 6+6 layers, 300 queries) on
   generated images resized as in validation (800 px on the short side), batch 4 per GPU, in float32 and with
   bfloat16 autocast: `benchmarks/bench_train_step.py` in a fresh process each, for images/s and peak memory.

Prints one Markdown table; exits 1 when a test fails, a step fails or runs out of time (the steps share one
time budget), or an error exceeds its tolerance.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ops  # noqa: E402
from ops import bench  # noqa: E402

# Relative to the reference's largest magnitude; the CUDA tests hold the kernel to the same bounds.
TOLERANCES = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
OUTPUT_NAMES = ("out", "d value", "d loc", "d weights")
# Runs bench_train_step.py as a script, then reports the process's peak GPU memory.
TRAIN_PROBE = """
import runpy, sys, torch
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print("PEAK_MEMORY_BYTES", torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else -1)
"""
STEP_LINE = re.compile(r"(\d+) steps: (\d+) ms/step, ([\d.]+) images/s")


@dataclass
class Size:
    """What the run measures: full sizes on a GPU, tiny ones for --smoke."""

    device: str
    queries: dict[str, int]  # attention cases: name -> number of queries
    config: str  # training: the config whose model is timed
    batch: int
    steps: int
    warmup: int
    workers: int
    image_scale: float  # 1: the authors' sizes (800 px on the short side)
    cat_ids: list[int] | None  # fake labels: COCO ids (None), or these ids remapped to 0..K-1
    budget_s: float  # for the whole run; the subprocesses get what is left


FULL = Size("cuda", dict(bench.QUERIES), "distributed_gcs.yaml", 4, 20, 5, 4, 1.0, None, 480)
# cpu_synthetic.yaml's small model on 100 px images; it has 5 classes: labels 0..3 from 4 category ids.
SMOKE = Size("cpu", {"decoder": bench.QUERIES["decoder"]}, "cpu_synthetic.yaml", 2, 1, 1, 0, 0.125, [1, 2, 3, 4], 480)


def left(deadline: float) -> float:
    """Seconds until `deadline`; at least 1, so that a late step fails by timing out rather than not running."""
    return max(1.0, deadline - time.monotonic())


@dataclass
class Row:
    check: str
    case: str
    measurement: str
    ok: bool


def run_gpu_tests(size: Size, deadline: float) -> Row:
    """`pytest -m gpu` in a fresh process; on a GPU none may be skipped."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=left(deadline))
    except subprocess.TimeoutExpired:
        return Row("CUDA tests", "pytest -m gpu", "out of time", False)
    lines = result.stdout.strip().splitlines()
    summary = lines[-1].strip("= ") if lines else "(no output)"
    skipped = re.search(r"(\d+) skipped", summary)
    ok = result.returncode == 0 and (size.device == "cpu" or skipped is None)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-2000:], sep="\n", file=sys.stderr)
    return Row("CUDA tests", "pytest -m gpu", summary, ok)


def output_and_grads(function, inputs: tuple[torch.Tensor, ...], grad_output: torch.Tensor) -> list[torch.Tensor]:
    """[output, d value, d sampling_locations, d attention_weights] of `function` at `inputs`."""
    value, shapes, starts, locations, weights = inputs
    leaves = [tensor.detach().requires_grad_() for tensor in (value, locations, weights)]
    output = function(leaves[0], shapes, starts, leaves[1], leaves[2])
    return [output.detach(), *torch.autograd.grad(output, leaves, grad_output.to(output.dtype))]


def relative_errors(num_queries: int, dtype: torch.dtype, device: torch.device) -> list[float]:
    """max |kernel - reference| / max |reference| for the output and the three gradients."""
    inputs = bench.make_inputs(num_queries, 1, device, dtype)
    value, shapes, starts, locations, weights = inputs
    output_shape = (1, num_queries, bench.HEADS * bench.CHANNELS)
    # Both sides get the same output gradient: rounded to `dtype`, then exact in float64.
    grad_output = torch.linspace(-1, 1, num_queries * output_shape[2], device=device).to(dtype).view(output_shape)
    kernel = output_and_grads(ops.ms_deform_attn, inputs, grad_output)
    exact_inputs = (value.double(), shapes, starts, locations.double(), weights.double())
    exact = output_and_grads(ops.ms_deform_attn_reference, exact_inputs, grad_output)
    return [((k.double() - e).abs().max() / e.abs().max()).item() for k, e in zip(kernel, exact)]


def check_kernel(size: Size) -> list[Row]:
    device = torch.device(size.device)
    rows = []
    for dtype, tolerance in TOLERANCES.items():
        for case, num_queries in size.queries.items():
            name = f"{DTYPE_NAMES[dtype]}, {case} ({num_queries} queries)"
            try:
                errors = relative_errors(num_queries, dtype, device)
                inputs = bench.make_inputs(num_queries, 1, device, dtype)
                _, forward_backward_ms = bench.time_function(ops.ms_deform_attn, inputs, device, repeats=5)
            except RuntimeError as error:
                rows.append(Row("kernel vs reference", name, f"error: {str(error).splitlines()[0]}", False))
                continue
            shown = ", ".join(f"{label} {error:.1e}" for label, error in zip(OUTPUT_NAMES, errors))
            measurement = f"max rel. error {shown} (tol. {tolerance:.0e}); fwd+bwd {forward_backward_ms:.2f} ms"
            within = all(error <= tolerance for error in errors)  # a NaN anywhere fails (max() could skip it)
            rows.append(Row("kernel vs reference", name, measurement, within))
    return rows


def training_config(size: Size, folder: Path) -> Path:
    """The size's config, its data replaced by generated images resized as in validation."""
    with open(ROOT / size.config) as f:
        config = yaml.safe_load(f)
    config["data"] = {
        "backend": "fake",
        "fake_length": max(8, size.batch * 4),
        "image_scale": size.image_scale,
        "augmentation": "flip",  # a flip, then the validation resize: every image 800 px on its short side
        "num_workers": size.workers,
    }
    if size.cat_ids is not None:
        config["data"]["cat_ids"] = size.cat_ids
    path = folder / f"gpu_check_{size.config}"
    path.write_text(yaml.safe_dump(config))
    return path


def run_training(size: Size, config: Path, amp: str, deadline: float) -> tuple[Row, float | None]:
    """bench_train_step.py in a fresh process (a clean peak-memory count); returns the row and images/s."""
    case = {"off": "fp32", "bf16": "bf16 autocast"}[amp]
    command = [
        sys.executable, "-c", TRAIN_PROBE, str(ROOT / "benchmarks" / "bench_train_step.py"),
        "--config", str(config), "--device", size.device, "--amp", amp, "--batch-size", str(size.batch),
        "--steps", str(size.steps), "--warmup", str(size.warmup),
    ]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=left(deadline))
    except subprocess.TimeoutExpired:
        return Row("training", case, "out of time", False), None
    steps = STEP_LINE.search(result.stdout)
    peak = re.search(r"PEAK_MEMORY_BYTES (-?\d+)", result.stdout)
    if result.returncode != 0 or steps is None or peak is None:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        what = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no step timings printed"
        return Row("training", case, f"failed: {what}", False), None
    images_per_s = float(steps.group(3))
    memory = f"peak {int(peak.group(1)) / 2**30:.1f} GiB" if int(peak.group(1)) >= 0 else "peak memory n/a (CPU)"
    measurement = f"{images_per_s:.1f} images/s, {steps.group(2)} ms/step over {steps.group(1)} steps, {memory}"
    return Row("training", case, measurement, True), images_per_s


def check_training(size: Size, deadline: float) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        config = training_config(size, Path(folder))
        fp32, fp32_speed = run_training(size, config, "off", deadline)
        bf16, bf16_speed = run_training(size, config, "bf16", deadline)
    if fp32_speed and bf16_speed:
        bf16.measurement += f"; {bf16_speed / fp32_speed:.2f}x fp32"
    rows += [fp32, bf16]
    return rows


def environment_line(size: Size) -> str:
    if size.device == "cuda":
        where = f"{torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))})"
    else:
        where = f"CPU, --smoke ({torch.get_num_threads()} threads)"
    return (f"gpu_check: {where}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
            f"attention kernel from {ops._build.STATE.origin or 'not loaded'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (no GPU needed)")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    if size.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no GPU visible (run with --smoke to check the script on a CPU)", file=sys.stderr)
        return 2
    os.environ["DDETR_MSDA_IMPL"] = "kernel"  # compare the compiled kernel, never the reference with itself
    start = time.monotonic()
    deadline = start + size.budget_s
    rows = check_kernel(size)  # first: builds the kernel, if it must be, before the subprocesses load it
    rows.append(run_gpu_tests(size, deadline))
    rows += check_training(size, deadline)

    print(environment_line(size) + f"; {time.monotonic() - start:.0f} s in all\n")
    print("| check | case | measurement | status |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row.check} | {row.case} | {row.measurement} | {'ok' if row.ok else 'FAIL'} |")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
