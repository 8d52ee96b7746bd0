"""The gcs backend against a real server: gcp-storage-emulator on 127.0.0.1, behind a proxy that fails on cue."""

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import torch
from google.api_core import exceptions as api_exceptions
from torch.utils.data import DataLoader
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from gcp_storage_emulator.server import create_server

import data
from deformable_detr.data.synthetic import write_split
from fixtures.fault_proxy import GcsFaultProxy as FailingProxy

BUCKET = "coco-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("coco"))
    write_split(root, "val", 5, 96, seed=5)
    return root


@pytest.fixture(scope="module")
def servers(coco_dir) -> Iterator[tuple[str, FailingProxy]]:
    """The emulator with the bucket filled from coco_dir, and a proxy in front of it."""
    port = free_port()
    emulator = create_server("127.0.0.1", port, in_memory=True)
    emulator.start()
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": f"http://127.0.0.1:{port}"}
    )
    bucket = client.create_bucket(BUCKET)
    for folder in ("val2017", "annotations"):
        for name in os.listdir(os.path.join(coco_dir, folder)):
            bucket.blob(f"{folder}/{name}").upload_from_filename(os.path.join(coco_dir, folder, name))
    proxy = FailingProxy(port)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", proxy
    proxy.shutdown()
    proxy.server_close()
    emulator.stop()


@pytest.fixture
def via_proxy(servers, monkeypatch) -> FailingProxy:
    _, proxy = servers
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{proxy.server_address[1]}")
    proxy.failures = []
    proxy.served_failures = 0
    return proxy


def gcs(tmp_path, **extra) -> dict:
    return {
        "backend": "gcs", "data_dir": BUCKET, "annotations_dir": str(tmp_path / "cache"), "image_scale": 0.2,
        "retry_initial_backoff_s": 0.05, "retry_timeout_s": 20.0, **extra,
    }


def test_gcs_items_equal_the_local_items_and_annotations_are_cached(via_proxy, coco_dir, tmp_path):
    dataset = data.build_dataset("val", gcs(tmp_path))
    assert os.path.isfile(tmp_path / "cache" / "instances_val2017.json")
    local = data.build_dataset("val", {"backend": "local", "data_dir": coco_dir, "download": False, "image_scale": 0.2})
    assert len(dataset) == len(local) == 5
    for index in range(len(dataset)):
        image, target = dataset[index]
        local_image, local_target = local[index]
        assert torch.equal(image, local_image)
        assert all(torch.equal(target[key], local_target[key]) for key in local_target)


def test_transient_errors_are_retried_and_no_sample_is_lost(via_proxy, tmp_path):
    dataset = data.build_dataset("val", gcs(tmp_path))
    expected = [dataset[index] for index in range(len(dataset))]
    via_proxy.failures = ["503", "503", "503", "reset", "429", "503"]
    again = [dataset[index] for index in range(len(dataset))]
    assert via_proxy.served_failures == 6 and via_proxy.failures == []
    for (image, target), (expected_image, expected_target) in zip(again, expected, strict=True):
        assert torch.equal(image, expected_image)
        assert torch.equal(target["boxes"], expected_target["boxes"])


def test_retries_stop_after_the_configured_total_time(via_proxy, tmp_path):
    dataset = data.build_dataset("val", gcs(tmp_path, retry_timeout_s=1.0))
    via_proxy.failures = ["503"] * 1000
    start = time.monotonic()
    with pytest.raises((api_exceptions.ServiceUnavailable, api_exceptions.RetryError)):
        dataset[0]
    assert time.monotonic() - start < 10.0
    assert 2 <= via_proxy.served_failures < 1000


def test_missing_blob_fails_at_once_naming_bucket_and_blob(via_proxy, tmp_path):
    dataset = data.build_dataset("val", gcs(tmp_path))
    image_id = dataset.ids[0]
    dataset.coco.imgs[image_id]["file_name"] = "absent.jpg"
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=rf"bucket '{BUCKET}', blob 'val2017/absent.jpg'"):
        dataset[0]
    assert time.monotonic() - start < 5.0


def test_missing_annotation_blob_names_bucket_and_blob(via_proxy, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"bucket '{BUCKET}', blob 'annotations/instances_train2017.json'"):
        data.build_dataset("train", gcs(tmp_path))
    assert not os.path.exists(tmp_path / "cache" / "instances_train2017.json")


def test_dataloader_workers_read_from_the_bucket_through_retries(via_proxy, tmp_path):
    dataset = data.build_dataset("val", gcs(tmp_path))
    via_proxy.failures = ["503", "503", "reset"]
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=data.collate_fn)
    image_ids = [int(target["image_id"]) for _, _, targets in loader for target in targets]
    assert image_ids == dataset.ids
    assert via_proxy.served_failures == 3
