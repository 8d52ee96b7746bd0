"""A shortened `make train`: the main job's own config and script, a few batches on a small generated
set, ending with the curves, the prediction picture and the final mAP line."""

import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_shortened_main_job_writes_its_pictures_and_final_map(tmp_path):
    with open(os.path.join(REPO_ROOT, "cpu_synthetic.yaml")) as f:
        config = yaml.safe_load(f)
    config["data"]["data_dir"] = str(tmp_path / "synthetic")
    config["data"]["trainer"]["reporting_period"] = {"batches": 1}
    config_path = tmp_path / "cpu_synthetic.yaml"
    config_path.write_text(yaml.safe_dump(config))
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "train_local.py", "--config", str(config_path), "--output", str(output),
         "--max-batches", "2", "--train-images", "16", "--val-images", "8", "--image-size", "256"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert os.path.isfile(tmp_path / "synthetic" / "annotations" / "instances_val2017.json")
    for name in ("curves.png", "predictions.png", "metrics.jsonl"):
        path = output / name
        assert path.is_file() and path.stat().st_size > 1000, name
    assert (output / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final_lines = [line for line in result.stdout.splitlines() if line.startswith("final bbox mAP: ")]
    assert len(final_lines) == 1
    assert 0.0 <= float(final_lines[0].split(": ")[1]) <= 1.0
    assert "batch 1/2" in log and "left" in log  # progress with time left
