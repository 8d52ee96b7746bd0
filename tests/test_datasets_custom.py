"""A dataset of one's own: a non-COCO layout with category ids 3, 17 and 42, `num_classes: auto`, fine-tuned
from authors'-style COCO weights through Determined's real Trainer; `predict.py` on its checkpoint reports the
dataset's ids and names. Also: a `num_classes` too small stops the run at start, naming the category."""

import argparse
import json
import os

import pytest
import torch
import yaml

import model as detr_model
import predict
from conftest import REPO_ROOT
from deformable_detr.config.experiment import ExperimentSettings, fixed_hyperparameters
from deformable_detr.data.synthetic import write_split
from deformable_detr.inference.loading import load_for_inference
from trial_runs import TINY_MODEL, checkpoints, read_metrics, run_script, write_config

CATEGORY_IDS = [3, 17, 42]
NAMES = {3: "rectangle", 17: "ellipse", 42: "triangle"}
SPLITS = {"train": {"images": "images", "annotations": "train.json"},
          "val": {"images": "images", "annotations": "val.json"}}


@pytest.fixture(scope="module")
def my_data(tmp_path_factory) -> str:
    """my_data/images/*.jpg, my_data/train.json, my_data/val.json with category ids 3, 17, 42."""
    root = str(tmp_path_factory.mktemp("my_data"))
    write_split(root, "train", 16, 96, seed=7, category_ids=CATEGORY_IDS, layout="flat")
    write_split(root, "val", 4, 96, seed=7, category_ids=CATEGORY_IDS, layout="flat")
    return root


def data_section(root: str, **extra) -> dict:
    return {"backend": "local", "data_dir": root, **SPLITS, "image_scale": 0.2, "num_workers": 0,
            "augmentation": "flip", **extra}


@pytest.mark.slow
def test_custom_layout_trains_with_auto_classes_from_coco_weights_and_predicts_its_own_ids(my_data, tmp_path):
    # weights in the authors' file format, for COCO's 91 classes
    released, _, _ = detr_model.build_model({**TINY_MODEL, "num_classes": 91})
    weights_file = str(tmp_path / "coco_released.pth")
    torch.save({"model": released.state_dict(), "args": argparse.Namespace(num_classes=91, backbone="resnet18")},
               weights_file)
    periods = {"validation_period": {"batches": 4}, "checkpoint_period": {"batches": 4},
               "reporting_period": {"batches": 2}, "warm_start": weights_file}
    config = write_config(str(tmp_path / "c.yaml"), {**data_section(my_data), "trainer": periods},
                          {"global_batch_size": 2, "num_classes": "auto", "lr": 1e-3})
    metrics_file = str(tmp_path / "m.jsonl")
    output = run_script([config, "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-file", metrics_file,
                         "--max-batches", "4"])
    assert "the checkpoint has 91 classes and the model 3" in output and "fresh initialisation" in output
    (validation,) = [r for r in read_metrics(metrics_file) if r["kind"] == "validation"]
    assert 0.0 <= validation["mAP"] <= 1.0

    checkpoint = checkpoints(str(tmp_path / "ckpt"))[4]
    with open(os.path.join(checkpoint, "deformable_detr.json")) as f:
        metadata = json.load(f)
    assert metadata["hparams"]["num_classes"] == 3  # resolved: the checkpoint rebuilds without the data
    assert metadata["label_to_cat_id"] == CATEGORY_IDS
    assert {int(k): v for k, v in metadata["category_names"].items()} == NAMES

    loaded = load_for_inference(checkpoint)
    assert loaded.names == {0: "rectangle", 1: "ellipse", 2: "triangle"}
    images = sorted(os.listdir(os.path.join(my_data, "images")))[:2]
    results = predict.predict(checkpoint, [os.path.join(my_data, "images", name) for name in images],
                              str(tmp_path / "predictions"), threshold=0.0)
    assert results and {r["category_id"] for r in results} <= set(CATEGORY_IDS)
    assert len({r["category_id"] for r in results}) > 1  # labels 0..2 mapped back, not one id for all


@pytest.mark.slow
def test_a_num_classes_too_small_for_the_data_stops_at_start_naming_the_category(my_data, tmp_path):
    config = write_config(str(tmp_path / "c.yaml"), data_section(my_data, labels="category_ids"),
                          {"global_batch_size": 2, "num_classes": 40})
    with pytest.raises(AssertionError) as raised:
        run_script([config, "--checkpoint-dir", str(tmp_path / "ckpt"), "--max-batches", "2"])
    message = str(raised.value)
    assert "hyperparameter 'num_classes' is 40, but category 42 ('triangle')" in message
    assert "num_classes >= 43" in message and "batch 1" not in message


def test_the_example_config_is_valid_and_sizes_the_model_from_the_data(my_data):
    with open(os.path.join(REPO_ROOT, "examples", "custom_dataset.yaml")) as f:
        config = yaml.safe_load(f)
    settings = ExperimentSettings.from_config(config, fixed_hyperparameters(config["hyperparameters"]))
    assert settings.model.num_classes == "auto" and settings.data.labels == "contiguous"
    assert settings.data.split("train").annotations == "train.json"
    # the same data section on the synthetic set: 3 classes, labels 0..2
    import data
    from deformable_detr.data.labels import fit_num_classes

    local = {**config["data"], "data_dir": my_data}
    local.pop("trainer")
    train = data.build_dataset("train", ExperimentSettings.from_config(
        {**config, "data": local}, fixed_hyperparameters(config["hyperparameters"])).data)
    assert fit_num_classes({"num_classes": "auto"}, train.label_space) == {"num_classes": 3}
    assert train.label_to_cat_id == CATEGORY_IDS
