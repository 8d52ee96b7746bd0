"""The trial through Determined's real Trainer: training, validation, checkpoints, exact resume, two
torchrun workers, and the errors a run must stop with."""

import os

import pytest
import torch
import yaml

from deformable_detr.data import synthetic
from deformable_detr.inference.loading import DETERMINED_CHECKPOINT_GLOBALS
from trial_runs import TINY_MODEL, checkpoints, read_metrics, run_script, write_config

pytestmark = pytest.mark.slow

FAKE_DATA = {"backend": "fake", "fake_length": 16, "image_scale": 0.2, "num_workers": 0}
PERIODS = {"validation_period": {"batches": 4}, "checkpoint_period": {"batches": 4}, "reporting_period": {"batches": 2}}
METRIC_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large")


@pytest.fixture(scope="module")
def synthetic_coco(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("synthetic"))
    synthetic.main(["--out", data_dir, "--train", "24", "--val", "8", "--size", "128", "--seed", "3"])
    return data_dir


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, synthetic_coco) -> dict:
    """Six batches on the on-disk synthetic COCO set, checkpointed (without validation) at batch 6."""
    work = tmp_path_factory.mktemp("synthetic_run")
    data = {
        "backend": "local",
        "data_dir": synthetic_coco,
        "download": False,
        "image_scale": 0.2,
        "num_workers": 1,
        "trainer": {"validation_period": {"batches": 1000}, "checkpoint_period": {"batches": 6},
                    "reporting_period": {"batches": 3}},
    }
    config = write_config(str(work / "config.yaml"), data, {"global_batch_size": 4, "num_classes": 5, "lr": 1e-3})
    metrics_file = str(work / "metrics.jsonl")
    output = run_script([config, "--checkpoint-dir", str(work / "ckpt"), "--metrics-file", metrics_file,
                         "--max-batches", "6"])
    return {"work": work, "config": config, "metrics": read_metrics(metrics_file), "output": output,
            "checkpoints": checkpoints(str(work / "ckpt")), "data": data}


def test_trial_trains_validates_and_checkpoints_on_fake_data(tmp_path):
    config = write_config(str(tmp_path / "c.yaml"), {**FAKE_DATA, "trainer": PERIODS}, {"global_batch_size": 2})
    metrics_file = str(tmp_path / "metrics.jsonl")
    output = run_script([config, "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-file", metrics_file,
                         "--max-batches", "4"])
    records = read_metrics(metrics_file)
    train = [r for r in records if r["kind"] == "train"]
    validation = [r for r in records if r["kind"] == "validation"]
    assert [r["batch"] for r in train] == [2, 4]
    for record in train:
        for term in ("loss", "loss_ce", "loss_bbox", "loss_giou", "class_error", "cardinality_error", "lr_rest"):
            assert term in record and record[term] == record[term], term  # present and not NaN
    assert len(validation) == 1 and validation[0]["batch"] == 4
    assert set(METRIC_NAMES) <= set(validation[0]) and "loss" in validation[0]
    assert 4 in checkpoints(str(tmp_path / "ckpt"))
    assert "batch 4/4" in output and "left" in output  # visible progress with time left
    # Determined's local chatter is left out; the saved checkpoints are not.
    assert "saved checkpoint" in output
    for chatter in ("report_training_metrics(", "upload_tensorboard_files()", "status: ", "not supported in local"):
        assert chatter not in output, chatter


def test_trial_trains_on_synthetic_coco_from_disk(synthetic_run):
    train = [r for r in synthetic_run["metrics"] if r["kind"] == "train"]
    validation = [r for r in synthetic_run["metrics"] if r["kind"] == "validation"]
    assert [r["batch"] for r in train] == [3, 6]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    # the final validation runs over all 8 images of the on-disk val set
    assert len(validation) == 1 and set(METRIC_NAMES) <= set(validation[0])
    checkpoint = synthetic_run["checkpoints"][6]
    assert os.path.isfile(os.path.join(checkpoint, "deformable_detr.json"))
    assert os.path.isfile(os.path.join(checkpoint, "state_dict.pth"))


def _load_state(checkpoint_dir: str) -> dict:
    with torch.serialization.safe_globals(DETERMINED_CHECKPOINT_GLOBALS):
        return torch.load(os.path.join(checkpoint_dir, "state_dict.pth"), map_location="cpu", weights_only=True)


def _assert_same_tree(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_resume_in_the_middle_of_an_epoch_is_bit_identical(tmp_path):
    # 8 batches per epoch, lr drop after the first epoch: 12 straight vs 6 + resume + 6.
    data = {**FAKE_DATA, "num_workers": 1, "trainer": {
        "validation_period": {"batches": 100}, "checkpoint_period": {"batches": 6}, "reporting_period": {"batches": 6}}}
    hparams = {"global_batch_size": 2, "lr_drop": 1, "dropout": 0.1}
    config = write_config(str(tmp_path / "c.yaml"), data, hparams)
    straight, halves = str(tmp_path / "straight"), str(tmp_path / "halves")
    run_script([config, "--checkpoint-dir", straight, "--max-batches", "12"])
    run_script([config, "--checkpoint-dir", halves, "--max-batches", "6"])
    run_script([config, "--checkpoint-dir", halves, "--max-batches", "12", "--resume", checkpoints(halves)[6]])
    a, b = _load_state(checkpoints(straight)[12]), _load_state(checkpoints(halves)[12])
    _assert_same_tree(a["models_state_dict"], b["models_state_dict"], "model")
    _assert_same_tree(a["optimizers_state_dict"], b["optimizers_state_dict"], "optimizer")
    _assert_same_tree(a["lr_schedulers_state_dict"], b["lr_schedulers_state_dict"], "lr_scheduler")
    assert b["lr_schedulers_state_dict"][0]["last_epoch"] == 1  # the drop happened once, after epoch 1
    assert b["optimizers_state_dict"][0]["param_groups"][0]["lr"] == pytest.approx(2e-5)


def test_two_torchrun_workers_validate_like_one_process(synthetic_run):
    """Both resume the same checkpoint (saved before validation), so they only validate: the metrics
    reduced over two workers must equal those of one process. The process validates in batches of 2, as
    each worker does: the validation losses are averaged over batches, each normalised by its own boxes."""
    work, checkpoint = synthetic_run["work"], synthetic_run["checkpoints"][6]
    with open(synthetic_run["config"]) as f:
        config = yaml.safe_load(f)
    config["hyperparameters"]["global_batch_size"] = 2
    single_config = str(work / "single.yaml")
    with open(single_config, "w") as f:
        yaml.safe_dump(config, f)
    one, two = str(work / "one.jsonl"), str(work / "two.jsonl")
    common = ["--checkpoint-dir", str(work / "ckpt"), "--resume", checkpoint, "--max-batches", "6"]
    single_log = run_script([single_config, *common, "--metrics-file", one])
    double_log = run_script([synthetic_run["config"], *common, "--metrics-file", two], nproc=2)
    # every one of the 8 validation images is evaluated once in both runs
    assert "validated: 8 records" in single_log and "validated: 8 records" in double_log
    (single,) = [r for r in read_metrics(one) if r["kind"] == "validation"]
    (double,) = [r for r in read_metrics(two) if r["kind"] == "validation"]
    # (the COCO merge across workers is checked with non-trivial detections in test_coco_eval.py)
    for name in METRIC_NAMES:
        assert double[name] == pytest.approx(single[name], abs=1e-12), name
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_two_torchrun_workers_train_and_validate_an_uneven_split(tmp_path):
    # 10 validation images in batches of 2 per worker: 5 batches, 3 for the chief and 2 for the other worker.
    # The chief's last batch must not wait in a collective that the other worker never joins.
    data = {**FAKE_DATA, "fake_length": 10, "trainer": PERIODS}
    config = write_config(str(tmp_path / "c.yaml"), data, {"global_batch_size": 4})
    metrics_file = str(tmp_path / "m.jsonl")
    output = run_script([config, "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-file", metrics_file,
                         "--max-batches", "2"], nproc=2, timeout=240)
    records = read_metrics(metrics_file)
    assert [r["kind"] for r in records] == ["train", "validation"]  # the chief alone writes the log
    assert records[0]["batch"] == 2 and "validated: 10 records" in output
    # one progress line per report, from the chief: the workers' averaged metrics are the same
    assert output.count("progress: batch 2/2 |") == 1 and output.count("progress: validation after 2 batches") == 1


def test_bf16_autocast_trains_with_finite_losses(tmp_path):
    config = write_config(str(tmp_path / "c.yaml"), {**FAKE_DATA, "trainer": PERIODS},
                          {"global_batch_size": 2, "amp": "bf16"})
    metrics_file = str(tmp_path / "m.jsonl")
    run_script([config, "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-file", metrics_file,
                "--max-batches", "2"])
    (train,) = [r for r in read_metrics(metrics_file) if r["kind"] == "train"]
    assert all(torch.isfinite(torch.tensor(train[name])) for name in ("loss", "loss_ce", "loss_bbox", "loss_giou"))


def test_fine_tuning_a_category_subset_from_released_weights(tmp_path, synthetic_coco):
    """The finetune.yaml path: weights in the authors' file format (5 classes) warm-start a model for a
    subset of two categories; the class heads start fresh, and evaluation maps labels 0..1 back to the
    subset's category ids."""
    import argparse

    import model as detr_model

    released, _, _ = detr_model.build_model({**TINY_MODEL, "num_classes": 5})
    weights_file = str(tmp_path / "released.pth")
    torch.save({"model": released.state_dict(), "args": argparse.Namespace(num_classes=5, backbone="resnet18")},
               weights_file)
    data = {"backend": "local", "data_dir": synthetic_coco, "download": False, "image_scale": 0.2,
            "num_workers": 0, "cat_ids": [2, 4],
            "trainer": {**PERIODS, "warm_start": weights_file}}
    config = write_config(str(tmp_path / "c.yaml"), data, {"global_batch_size": 2, "num_classes": 2})
    metrics_file = str(tmp_path / "m.jsonl")
    output = run_script([config, "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-file", metrics_file,
                         "--max-batches", "2"])
    assert "classification heads" in output and "fresh initialisation" in output  # the log says so
    (validation,) = [r for r in read_metrics(metrics_file) if r["kind"] == "validation"]
    assert set(METRIC_NAMES) <= set(validation)
    import json

    with open(os.path.join(checkpoints(str(tmp_path / "ckpt"))[2], "deformable_detr.json")) as f:
        metadata = json.load(f)
    assert metadata["label_to_cat_id"] == [2, 4]
    assert metadata["category_names"]["2"] == "ellipse" and metadata["category_names"]["4"] == "cross"
