"""A validation that stops on an unreadable image (the `error` policy) does not lose the checkpoint due at
the same boundary: it is written first, complete, and the error names both the image and the checkpoint."""

import os
import re

import pytest

from deformable_detr.data import synthetic
from deformable_detr.inference.checkpoint_files import latest_complete_checkpoint, steps_completed
from trial_runs import run_script, write_config

pytestmark = pytest.mark.slow


def test_checkpoint_is_written_before_a_truncated_validation_image_stops_the_run(tmp_path):
    data_dir = str(tmp_path / "data")
    synthetic.main(["--out", data_dir, "--train", "8", "--val", "4", "--size", "96", "--seed", "5"])
    val_dir = os.path.join(data_dir, "val2017")
    broken = sorted(os.listdir(val_dir))[2]
    with open(os.path.join(val_dir, broken), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(val_dir, broken)) // 2)  # a truncated JPEG
    data = {"backend": "local", "data_dir": data_dir, "download": False, "image_scale": 0.2, "num_workers": 1,
            "trainer": {"validation_period": {"epochs": 1}, "checkpoint_period": {"epochs": 1}}}
    config = write_config(str(tmp_path / "c.yaml"), data, {"global_batch_size": 2, "num_classes": 5})
    checkpoint_dir = str(tmp_path / "ckpt")
    with pytest.raises(AssertionError, match="failed") as failure:
        run_script([config, "--checkpoint-dir", checkpoint_dir, "--max-batches", "4"])  # epoch 1: 4 batches
    log = str(failure.value)
    assert "ValidationFailedError" in log and broken in log and "truncated" in log
    checkpoint = latest_complete_checkpoint(checkpoint_dir)
    assert steps_completed(checkpoint) == 4  # the epoch's checkpoint, complete
    assert re.search(rf"the checkpoint was written before stopping: {re.escape(checkpoint)}", log)
