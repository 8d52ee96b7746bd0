"""The `data:` section is validated with errors that name the key."""

import os

import pytest

import data
from deformable_detr.config.data import DataSettings
from deformable_detr.config.data import SplitSettings
from deformable_detr.data.build import annotation_file


def test_defaults_are_filled_in():
    config = DataSettings.from_mapping({"backend": "local", "data_dir": "coco"})
    assert config == DataSettings(backend="local", data_dir="coco")
    assert config.download and config.download_url == "http://images.cocodataset.org"
    assert config.num_workers == 4 and config.fake_length == 1000 and config.image_scale == 1.0
    assert config.cat_ids is None and config.augmentation == "detr"


def test_cat_ids_and_numbers_are_normalised():
    config = DataSettings.from_mapping({"backend": "fake", "cat_ids": [3, 1], "image_scale": 1, "fake_length": 10})
    assert config.cat_ids == (3, 1) and config.image_scale == 1.0 and isinstance(config.image_scale, float)


@pytest.mark.parametrize(
    "section, key",
    [
        ({}, "backend"),
        ({"backend": "hdfs"}, "backend"),
        ({"backend": "s3"}, "bucket"),
        ({"backend": "s3", "bucket": "b/p"}, "bucket"),
        ({"backend": "s3", "bucket": "b", "data_dir": "d"}, "data_dir"),
        ({"backend": "s3", "bucket": "b", "retry_mode": "fast"}, "retry_mode"),
        ({"backend": "s3", "bucket": "b", "max_attempts": 0}, "max_attempts"),
        ({"backend": "local", "data_dir": "d", "bucket": "b"}, "bucket"),
        ({"backend": "local", "data_dir": "d", "prefix": "p"}, "prefix"),
        ({"backend": "fake", "labels": "names"}, "labels"),
        ({"backend": "fake", "labels": "category_ids", "cat_ids": [1]}, "labels"),
        ({"backend": "fake", "check": "warn"}, "check"),
        ({"backend": "fake", "on_bad_image": "ignore"}, "on_bad_image"),
        ({"backend": "fake", "fake_categories": 0}, "fake_categories"),
        ({"backend": "fake", "train": "images/train"}, "data.train"),
        ({"backend": "fake", "train": {"images": "i"}}, r"data\.train\.annotations is required"),
        ({"backend": "fake", "val": {"images": "i", "annotations": ""}}, r"data\.val\.annotations"),
        ({"backend": "fake", "val": {"images": "i", "annotation": "a"}},
         r"'annotation' \(did you mean 'annotations'\?\)"),
        ({"backend": "fake", "val": {"images": 3, "annotations": "a"}}, r"data\.val\.images"),
        ({"backend": "fake", "annotations_dir": "a", "train": {"images": "i", "annotations": "t/x.json"},
          "val": {"images": "j", "annotations": "v/x.json"}}, "annotations_dir"),
        ({"backend": "local"}, "data_dir"),
        ({"backend": "gcs"}, "data_dir"),
        ({"backend": "gcs", "data_dir": "bucket/prefix"}, "data_dir"),
        ({"backend": "fake", "batch_size": 2}, "batch_size"),
        ({"backend": "fake", "num_worker": 2}, r"'num_worker' \(did you mean 'num_workers'\?\)"),
        ({"backend": "fake", "num_workers": -1}, "num_workers"),
        ({"backend": "fake", "num_workers": True}, "num_workers"),
        ({"backend": "fake", "num_workers": "4"}, "num_workers"),
        ({"backend": "fake", "fake_length": 0}, "fake_length"),
        ({"backend": "fake", "download": "yes"}, "download"),
        ({"backend": "fake", "image_scale": 0}, "image_scale"),
        ({"backend": "fake", "image_scale": "big"}, "image_scale"),
        ({"backend": "fake", "cat_ids": []}, "cat_ids"),
        ({"backend": "fake", "cat_ids": [1, 1]}, "cat_ids"),
        ({"backend": "fake", "cat_ids": [1, "dog"]}, "cat_ids"),
        ({"backend": "fake", "cat_ids": [0]}, "cat_ids"),
        ({"backend": "fake", "cat_ids": 3}, "cat_ids"),
        ({"backend": "fake", "retry_timeout_s": 0}, "retry_timeout_s"),
        ({"backend": "fake", "augmentation": "mosaic"}, "augmentation"),
        ({"backend": "fake", "augmentation": 1}, "augmentation"),
        ({"backend": "fake", "retry_initial_backoff_s": -1}, "retry_initial_backoff_s"),
    ],
)
def test_bad_sections_are_rejected_naming_the_key(section, key):
    with pytest.raises(ValueError, match=key):
        DataSettings.from_mapping(section)


def test_build_dataset_rejects_an_unknown_image_set():
    with pytest.raises(ValueError, match="image_set"):
        data.build_dataset("test", {"backend": "fake"})


def test_annotation_file_locations(monkeypatch):
    local = DataSettings.from_mapping({"backend": "local", "data_dir": "d"})
    assert annotation_file(local, "val") == os.path.join("d", "annotations/instances_val2017.json")
    custom = DataSettings.from_mapping(
        {"backend": "local", "data_dir": "d", "train": {"images": "images", "annotations": "train.json"}}
    )
    assert custom.split("train") == SplitSettings("images", "train.json")
    assert custom.split("val") == SplitSettings("val2017", "annotations/instances_val2017.json")  # the default
    assert annotation_file(custom, "train") == os.path.join("d", "train.json")
    monkeypatch.setenv("XDG_CACHE_HOME", "cache-root")
    gcs = DataSettings.from_mapping({"backend": "gcs", "data_dir": "bucket"})
    assert annotation_file(gcs, "val") == os.path.join(
        "cache-root", "deformable_detr", "gcs", "bucket", "annotations", "instances_val2017.json"
    )
    explicit = DataSettings.from_mapping({"backend": "gcs", "data_dir": "bucket", "annotations_dir": "here"})
    assert annotation_file(explicit, "train") == os.path.join("here", "instances_train2017.json")
    s3 = DataSettings.from_mapping({"backend": "s3", "bucket": "b", "prefix": "/sets/mine/",
                                    "val": {"images": "img", "annotations": "labels/val.json"}})
    assert annotation_file(s3, "val") == os.path.join(
        "cache-root", "deformable_detr", "s3", "b", "sets", "mine", "labels", "val.json"
    )


def test_labels_follow_num_classes_unless_set():
    fake = DataSettings.from_mapping({"backend": "fake"})
    assert fake.labels is None
    assert fake.for_model("auto").labels == "contiguous"
    assert fake.for_model(91).labels == "category_ids" and fake.for_model(91).fake_categories == 90
    assert fake.for_model(5).fake_categories == 4  # the fake data fits a small model
    explicit = DataSettings.from_mapping({"backend": "fake", "labels": "category_ids", "fake_categories": 7})
    assert explicit.for_model("auto").labels == "category_ids" and explicit.for_model(5).fake_categories == 7
