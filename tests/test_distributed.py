"""The box count that normalises the training losses is averaged over real worker processes (torchrun,
horovodrun); the validation losses use each worker's own count."""

import importlib.util
import json
import os
import shutil
import sys

import pytest

from deformable_detr.training.distributed import average_num_boxes
from processes import run_group

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "num_boxes_worker.py")
MEAN_OF_3_AND_8 = 5.5


def _read_results(output_dir: str) -> list[dict]:
    results = []
    for rank in range(2):
        with open(os.path.join(output_dir, f"rank{rank}.json")) as handle:
            results.append(json.load(handle))
    return results


def _check(results: list[dict]) -> None:
    assert [r["local"] for r in results] == [3, 8]
    for result in results:
        assert result["averaged"] == MEAN_OF_3_AND_8
        assert result["averaged_empty"] == 1.0  # clamped: the losses divide by it
        assert result["loss_bbox"] == pytest.approx(result["loss_bbox_unnormalised"] / MEAN_OF_3_AND_8, rel=1e-6)
        # validation: each worker divides by its own count, without a collective
        own = result["loss_bbox_unnormalised"] / result["local"]
        assert result["loss_bbox_own_count"] == pytest.approx(own, rel=1e-6)


def _run(command: list[str], env: dict[str, str]) -> None:
    completed = run_group(command, 240, env=env)
    output = f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    assert completed.returncode == 0, f"{' '.join(command)} failed:\n{output}"


def test_single_process_count_is_unchanged_but_at_least_one() -> None:
    assert average_num_boxes(7) == 7.0
    assert average_num_boxes(0) == 1.0


@pytest.mark.slow
def test_two_torchrun_workers_get_the_same_average(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER, "torch",
          str(tmp_path)], env)
    _check(_read_results(str(tmp_path)))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("horovod") is None,
                    reason="horovod is not installed (build it with `make horovod`)")
def test_two_horovod_workers_get_the_same_average(tmp_path) -> None:
    horovodrun = shutil.which("horovodrun", path=os.path.dirname(sys.executable)) or shutil.which("horovodrun")
    if horovodrun is None:
        pytest.skip("horovod is installed but horovodrun is not on PATH")
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path}
    _run([horovodrun, "-np", "2", "--gloo", "-H", "localhost:2", sys.executable, WORKER, "horovod", str(tmp_path)], env)
    _check(_read_results(str(tmp_path)))
