"""The `data:` section is validated with errors that name the key."""

import os

import pytest

import data
from deformable_detr.config.data import DataSettings
from deformable_detr.data.build import annotations_dir


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
        ({"backend": "s3"}, "backend"),
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


def test_annotation_folder_defaults(monkeypatch):
    assert annotations_dir(DataSettings.from_mapping({"backend": "local", "data_dir": "d"})) == os.path.join(
        "d", "annotations"
    )
    monkeypatch.setenv("XDG_CACHE_HOME", "cache-root")
    gcs = DataSettings.from_mapping({"backend": "gcs", "data_dir": "bucket"})
    assert annotations_dir(gcs) == os.path.join("cache-root", "deformable_detr", "gcs", "bucket", "annotations")
    explicit = DataSettings.from_mapping({"backend": "gcs", "data_dir": "bucket", "annotations_dir": "here"})
    assert annotations_dir(explicit) == "here"
