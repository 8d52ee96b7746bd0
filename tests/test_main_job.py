"""A shortened `make train`: the main job's own config and script, a few batches on a small generated
set, ending with the curves, the prediction picture and the final mAP line; each run in a new folder,
nothing a user put anywhere deleted, arguments checked before anything runs."""

import os
import sys

import pytest
import yaml

import model_def
import train_local
from conftest import REPO_ROOT
from processes import run_group


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 1])
def test_shortened_main_job_writes_its_pictures_and_final_map(tmp_path, workers):
    with open(os.path.join(REPO_ROOT, "cpu_synthetic.yaml")) as f:
        config = yaml.safe_load(f)
    config["data"]["data_dir"] = str(tmp_path / "synthetic")
    config["data"]["trainer"]["reporting_period"] = {"batches": 1}
    config_path = tmp_path / "cpu_synthetic.yaml"
    config_path.write_text(yaml.safe_dump(config))
    output = tmp_path / "out"
    result = run_group(
        [sys.executable, "train_local.py", "--config", str(config_path), "--output", str(output),
         "--max-batches", "2", "--train-images", "16", "--val-images", "8", "--image-size", "256",
         "--workers", str(workers)],
        900, cwd=REPO_ROOT,
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
    assert log.count("progress: batch 1/2 |") == 1 and "left" in log  # progress with time left, from the chief


def test_each_run_gets_a_new_folder_and_latest_points_at_it(tmp_path):
    root = tmp_path / "train"
    (root / "earlier-run").mkdir(parents=True)
    (root / "earlier-run" / "best.pth").write_text("a user's file")
    first = train_local.new_run_folder(str(root))
    second = train_local.new_run_folder(str(root))
    assert first != second and os.path.isdir(first) and os.path.isdir(second)
    assert os.listdir(first) == [] and os.listdir(second) == []
    assert os.path.realpath(root / "latest") == os.path.realpath(second)
    assert (root / "earlier-run" / "best.pth").read_text() == "a user's file"


def test_without_symlinks_a_latest_file_names_the_newest_run(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    run = train_local.new_run_folder(str(tmp_path))
    assert (tmp_path / "LATEST").read_text().strip() == os.path.basename(run)


@pytest.mark.parametrize("existing", ["folder", "file"])
def test_an_output_that_holds_something_is_refused_before_anything_runs(tmp_path, capsys, existing):
    output = tmp_path / "out"
    if existing == "folder":
        output.mkdir()
        (output / "notes.txt").write_text("keep me")
    else:
        output.write_text("keep me")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_dir": str(tmp_path / "synthetic")}}))
    with pytest.raises(SystemExit) as exit_info:
        train_local.main(["--config", str(config), "--output", str(output), "--max-batches", "1"])
    assert exit_info.value.code == 2
    assert "--output" in capsys.readouterr().err
    kept = output / "notes.txt" if existing == "folder" else output
    assert kept.read_text() == "keep me"
    assert not (tmp_path / "synthetic").exists()  # nothing ran: no dataset generated


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_max_batches_must_be_a_positive_integer(value, capsys):
    for main in (train_local.main, model_def.main):
        with pytest.raises(SystemExit) as exit_info:
            main(["--max-batches", value] + (["config.yaml"] if main is model_def.main else []))
        assert exit_info.value.code == 2
        assert "--max-batches: must be a positive integer" in capsys.readouterr().err
