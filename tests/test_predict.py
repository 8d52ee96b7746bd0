"""predict.py on a checkpoint of a short training run: COCO results JSON that pycocotools accepts,
annotated PNGs, one output per input even when file names repeat, unreadable images skipped or refused
before any output, arguments checked before the model loads, clear errors for checkpoints of the wrong
shape."""

import contextlib
import io
import json
import logging
import os
import shutil

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

import predict
from deformable_detr.data import synthetic
from deformable_detr.data.images import ImageDecodeError
from deformable_detr.inference.loading import CheckpointMismatchError
from trial_runs import checkpoints, run_script, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("predict")
    data_dir = str(work / "data")
    synthetic.main(["--out", data_dir, "--train", "8", "--val", "4", "--size", "96", "--seed", "7"])
    data = {"backend": "local", "data_dir": data_dir, "download": False, "image_scale": 0.2, "num_workers": 0,
            "trainer": {"validation_period": {"batches": 2}, "checkpoint_period": {"batches": 2}}}
    config = write_config(str(work / "c.yaml"), data, {"global_batch_size": 2, "num_classes": 5})
    run_script([config, "--checkpoint-dir", str(work / "ckpt"), "--max-batches", "2"])
    return {"checkpoint": checkpoints(str(work / "ckpt"))[2], "data_dir": data_dir, "work": work}


def test_predict_writes_coco_results_and_pictures(trained, tmp_path):
    val_dir = os.path.join(trained["data_dir"], "val2017")
    results = predict.predict(trained["checkpoint"], [val_dir], str(tmp_path), threshold=0.0, batch_size=3)
    with open(tmp_path / "detections.json") as f:
        written = json.load(f)
    assert written == results and len(written) == 4 * 100  # 100 per image at threshold 0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(os.path.join(trained["data_dir"], "annotations", "instances_val2017.json"))
        detections = gt.loadRes(written)  # pycocotools accepts the file as results
    assert set(detections.getImgIds()) == set(gt.getImgIds())
    assert {entry["category_id"] for entry in written} <= set(range(5))
    for name in sorted(os.listdir(val_dir)):
        png = tmp_path / (name + ".png")
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]


def test_threshold_keeps_only_confident_detections(trained, tmp_path):
    val_dir = os.path.join(trained["data_dir"], "val2017")
    all_results = predict.predict(trained["checkpoint"], [val_dir], str(tmp_path / "a"), threshold=0.0)
    cut = sorted(entry["score"] for entry in all_results)[len(all_results) // 2]
    kept = predict.predict(trained["checkpoint"], [val_dir], str(tmp_path / "b"), threshold=cut)
    assert kept and all(entry["score"] >= cut for entry in kept) and len(kept) < len(all_results)


def val_images(trained) -> list[str]:
    val_dir = os.path.join(trained["data_dir"], "val2017")
    return [os.path.join(val_dir, name) for name in sorted(os.listdir(val_dir))]


def test_same_file_names_in_other_folders_or_formats_keep_every_output(trained, tmp_path):
    first, second = val_images(trained)[:2]
    inputs = tmp_path / "in"
    (inputs / "a").mkdir(parents=True)
    (inputs / "b").mkdir()
    shutil.copy(first, inputs / "a" / "img.jpg")
    Image.open(second).save(inputs / "a" / "img.png")
    shutil.copy(second, inputs / "b" / "img.jpg")
    out = tmp_path / "out"
    results = predict.predict(trained["checkpoint"], [str(inputs / "a" / "img.jpg"), str(inputs / "a" / "img.png"),
                                                      str(inputs / "b")], str(out), threshold=0.0)
    for name in ("a/img.jpg.png", "a/img.png.png", "b/img.jpg.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    by_name = {}
    for entry in results:
        by_name.setdefault(entry["file_name"], set()).add(entry["image_id"])
    assert sorted(by_name) == ["a/img.jpg", "a/img.png", "b/img.jpg"]
    assert len(set().union(*by_name.values())) == 3  # one image id each
    with open(out / "detections.json") as f:
        assert json.load(f) == results


def test_unreadable_image_is_skipped_with_a_warning_and_the_rest_written(trained, tmp_path, caplog):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = val_images(trained)[:2]
    for path in good:
        shutil.copy(path, inputs)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="predict"):
        results = predict.predict(trained["checkpoint"], [str(inputs)], str(out), threshold=0.0, batch_size=3)
    assert "broken.jpg" in caplog.text
    assert {entry["file_name"] for entry in results} == {os.path.basename(path) for path in good}
    assert sorted(os.listdir(out)) == sorted(["detections.json"] + [os.path.basename(p) + ".png" for p in good])


def test_unreadable_image_with_the_error_policy_stops_before_any_output(trained, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        predict.predict(trained["checkpoint"], val_images(trained)[:1] + [str(broken)], str(out),
                        on_bad_image="error")
    assert not out.exists()


def model_must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the arguments were checked")


def test_output_that_is_a_file_fails_before_the_model_loads(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predict, "load_for_inference", model_must_not_load)
    output = tmp_path / "out"
    output.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", trained["checkpoint"], "--output", str(output), *val_images(trained)[:1]])
    assert exit_info.value.code == 2 and "is a file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--output .* is a file"):
        predict.predict(trained["checkpoint"], val_images(trained)[:1], str(output))
    assert output.read_text() == "not a folder"


@pytest.mark.parametrize("bad", [["--threshold", "1.5"], ["--batch-size", "0"], ["--checkpoint", "nowhere"]])
def test_bad_arguments_fail_before_the_model_loads(trained, tmp_path, monkeypatch, bad):
    monkeypatch.setattr(predict, "load_for_inference", model_must_not_load)
    args = ["--checkpoint", trained["checkpoint"], "--output", str(tmp_path / "out"), *val_images(trained)[:1]]
    with pytest.raises(SystemExit) as exit_info:
        predict.main(args + bad)
    assert exit_info.value.code == 2 and not (tmp_path / "out").exists()


def test_checkpoint_of_the_wrong_shape_is_refused(trained, tmp_path):
    import argparse

    state = torch.load(os.path.join(trained["checkpoint"], "state_dict.pth"), weights_only=False)
    weights = state["models_state_dict"][0]
    weights["class_embed.0.bias"] = torch.zeros(7)  # one class head of the wrong size
    args = argparse.Namespace(backbone="resnet18", enc_layers=1, dec_layers=1, hidden_dim=64, dim_feedforward=64,
                              nheads=8, num_queries=20, num_classes=5)
    path = tmp_path / "wrong.pth"
    torch.save({"model": weights, "args": args}, path)
    image = os.path.join(trained["data_dir"], "val2017", sorted(os.listdir(os.path.join(trained["data_dir"], "val2017")))[0])
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch.*class_embed\.0\.bias"):
        predict.predict(str(path), [image], str(tmp_path / "out"))


def test_a_folder_of_checkpoints_uses_the_latest_complete_one(trained, tmp_path):
    """What `make train` prints: the run's checkpoint folder, not one checkpoint."""
    val_dir = os.path.join(trained["data_dir"], "val2017")
    parent = os.path.join(str(trained["work"]), "ckpt")
    from_parent = predict.predict(parent, [val_dir], str(tmp_path / "a"), threshold=0.0)
    from_checkpoint = predict.predict(trained["checkpoint"], [val_dir], str(tmp_path / "b"), threshold=0.0)
    assert from_parent == from_checkpoint and from_parent
