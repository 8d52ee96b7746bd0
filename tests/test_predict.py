"""predict.py on a checkpoint of a short training run: COCO results JSON that pycocotools accepts,
annotated PNGs, and clear errors for unreadable images and checkpoints of the wrong shape."""

import contextlib
import io
import json
import os

import pytest
import torch
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
        png = tmp_path / (os.path.splitext(name)[0] + ".png")
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_threshold_keeps_only_confident_detections(trained, tmp_path):
    val_dir = os.path.join(trained["data_dir"], "val2017")
    all_results = predict.predict(trained["checkpoint"], [val_dir], str(tmp_path / "a"), threshold=0.0)
    cut = sorted(entry["score"] for entry in all_results)[len(all_results) // 2]
    kept = predict.predict(trained["checkpoint"], [val_dir], str(tmp_path / "b"), threshold=cut)
    assert kept and all(entry["score"] >= cut for entry in kept) and len(kept) < len(all_results)


def test_unreadable_image_is_named(trained, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        predict.predict(trained["checkpoint"], [str(broken)], str(tmp_path / "out"))


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
