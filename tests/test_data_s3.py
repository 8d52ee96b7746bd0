"""The S3 image store against a real server: moto's S3 server on 127.0.0.1, behind a proxy that fails on cue.

The store signs and sends real HTTP requests (the proxy sees each of them); credentials are dummy ones from
the environment, as the AWS chain finds them.
"""

import json
import multiprocessing
import os
import pickle
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from filelock import FileLock
from moto.server import ThreadedMotoServer
from torch.utils.data import DataLoader, Dataset

import data
from deformable_detr.data.s3 import S3ImageStore, S3ReadError
from deformable_detr.data.stores import cache_file
from deformable_detr.data.synthetic import write_split
from fixtures.fault_proxy import ABORT, RESET, S3_ERRORS, TRUNCATE, FaultProxy

BUCKET = "coco-s3-test"
PREFIX = "datasets/coco"
ANNOTATIONS = "annotations/instances_val2017.json"
IMAGE_COUNT = 12
ACCESS_KEY_ID = "AKIDFROMENVIRONMENT"
SECRET_ACCESS_KEY = "secret-from-environment"


@dataclass
class Servers:
    proxy: FaultProxy
    objects: dict[str, bytes]  # path under PREFIX -> content

    @property
    def images(self) -> list[str]:
        return sorted(path for path in self.objects if path.startswith("val2017/"))


def object_path(path: str) -> str:
    """The request path of `path` under PREFIX (path-style addressing, as botocore uses for an IP endpoint)."""
    return f"/{BUCKET}/{PREFIX}/{path}"


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Servers]:
    """moto's S3 server with the bucket filled with a synthetic COCO val split, and a proxy that fails GETs."""
    root = str(tmp_path_factory.mktemp("coco"))
    write_split(root, "val", IMAGE_COUNT, 64, seed=11)
    objects = {}
    for folder in ("val2017", "annotations"):
        for name in os.listdir(os.path.join(root, folder)):
            with open(os.path.join(root, folder, name), "rb") as file:
                objects[f"{folder}/{name}"] = file.read()
    assert len(set(objects.values())) == len(objects) == IMAGE_COUNT + 1, "the images must be distinct"

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # The test's own client fills the bucket directly, not through the proxy.
    seeder = boto3.session.Session().client(
        "s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
        aws_access_key_id="seeding", aws_secret_access_key="seeding",
    )
    seeder.create_bucket(Bucket=BUCKET)
    for path, content in objects.items():
        seeder.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{path}", Body=content)
    proxy = FaultProxy(port, S3_ERRORS, faulty=lambda method, path: method == "GET")
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield Servers(proxy, objects)
    proxy.shutdown()
    proxy.server_close()
    server.stop()


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch, tmp_path) -> None:
    """Dummy credentials in the environment, and nothing else of the machine's AWS set-up."""
    for name in (
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def proxy(servers) -> FaultProxy:
    servers.proxy.clear()
    return servers.proxy


def located(path: str) -> str:
    """A pattern for how errors name the object `path` under PREFIX: bucket, key and s3:// URL."""
    key = f"{PREFIX}/{path}"
    return re.escape(f"bucket '{BUCKET}', key '{key}' (s3://{BUCKET}/{key})")


def make_store(proxy: FaultProxy, **settings) -> S3ImageStore:
    # A short read timeout: a hung connection fails the test in seconds rather than a minute.
    return S3ImageStore(BUCKET, **{"prefix": PREFIX, "endpoint_url": proxy.url, "read_timeout_s": 10.0, **settings})


def gets(proxy: FaultProxy, path: str) -> list[str | None]:
    """The failure served to each GET of request path `path`, in order (None: forwarded)."""
    return [seen.failure for seen in proxy.seen if seen.method == "GET" and seen.path.split("?")[0] == path]


def test_reads_objects_under_the_prefix_over_http(servers, proxy):
    store = make_store(proxy, prefix="/datasets/coco/")
    for path in servers.images[:3]:
        assert store.read(path) == servers.objects[path]
        assert store.describe(path) == f"s3://{BUCKET}/{PREFIX}/{path}"
    assert [seen.path.split("?")[0] for seen in proxy.seen] == [object_path(path) for path in servers.images[:3]]
    assert len({seen.client_port for seen in proxy.seen}) == 1, "the connection is kept alive between objects"


def test_credentials_come_from_the_environment_then_the_shared_credentials_file(servers, proxy, monkeypatch, tmp_path):
    path = servers.images[0]
    assert make_store(proxy).read(path) == servers.objects[path]
    assert f"Credential={ACCESS_KEY_ID}/" in proxy.seen[-1].headers["Authorization"]

    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = secret-from-file\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    assert make_store(proxy).read(path) == servers.objects[path]
    assert "Credential=AKIDFROMFILE/" in proxy.seen[-1].headers["Authorization"]


def cache_in_child(store: S3ImageStore, destination: str) -> None:
    cache_file(store, ANNOTATIONS, destination)


def test_annotation_file_is_cached_once_with_an_atomic_rename(servers, proxy, tmp_path):
    destination = str(tmp_path / "cache" / "instances_val2017.json")
    assert cache_file(make_store(proxy), ANNOTATIONS, destination) == destination
    with open(destination, "rb") as file:
        assert file.read() == servers.objects[ANNOTATIONS]
    assert cache_file(make_store(proxy), ANNOTATIONS, destination) == destination
    assert len(gets(proxy, object_path(ANNOTATIONS))) == 1
    assert not [name for name in os.listdir(tmp_path / "cache") if name.startswith(".part-")]

    # Two processes asking at once, held at the lock until both wait there: one downloads, the other finds the file.
    shared = str(tmp_path / "shared" / "instances_val2017.json")
    os.makedirs(os.path.dirname(shared))
    store = make_store(proxy)
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=cache_in_child, args=(store, shared)) for _ in range(2)]
    with FileLock(shared + ".lock"):
        for child in children:
            child.start()
        time.sleep(0.5)
        assert len(gets(proxy, object_path(ANNOTATIONS))) == 1, "a process downloaded without holding the lock"
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    with open(shared, "rb") as file:
        assert file.read() == servers.objects[ANNOTATIONS]
    assert len(gets(proxy, object_path(ANNOTATIONS))) == 2


def test_a_failed_download_leaves_no_cached_file(servers, proxy, tmp_path):
    destination = tmp_path / "cache" / "instances_val2017.json"
    proxy.failures_by_path[object_path(ANNOTATIONS)] = [TRUNCATE]
    with pytest.raises(S3ReadError, match=located(ANNOTATIONS)):
        cache_file(make_store(proxy), ANNOTATIONS, str(destination))
    with pytest.raises(FileNotFoundError, match=located("annotations/instances_x.json")):
        cache_file(make_store(proxy), "annotations/instances_x.json", str(tmp_path / "cache" / "instances_x.json"))
    assert sorted(name for name in os.listdir(tmp_path / "cache") if not name.endswith(".lock")) == []


def test_throttling_errors_and_resets_are_retried_by_botocore(servers, proxy):
    path = servers.images[1]
    proxy.failures_by_path[object_path(path)] = ["slowdown", RESET, ABORT, "internal"]
    assert make_store(proxy).read(path) == servers.objects[path]
    assert gets(proxy, object_path(path)) == ["slowdown", RESET, ABORT, "internal", None]


@pytest.mark.parametrize("retry_mode", ["standard", "adaptive", "legacy"])
def test_each_retry_mode_retries_a_slowdown(servers, proxy, retry_mode):
    path = servers.images[2]
    proxy.failures_by_path[object_path(path)] = ["slowdown"]
    assert make_store(proxy, retry_mode=retry_mode).read(path) == servers.objects[path]
    assert gets(proxy, object_path(path)) == ["slowdown", None]


def test_store_settings_win_over_aws_retry_variables_and_the_endpoint_comes_from_the_chain(servers, proxy, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "legacy")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    path = servers.images[2]
    proxy.failures_by_path[object_path(path)] = ["internal"]
    assert S3ImageStore(BUCKET, prefix=PREFIX, max_attempts=2).read(path) == servers.objects[path]
    assert gets(proxy, object_path(path)) == ["internal", None]


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_retries_stop_after_max_attempts_naming_the_bucket_and_key(servers, proxy, max_attempts):
    path = servers.images[3]
    proxy.failures_by_path[object_path(path)] = ["internal"] * 10
    with pytest.raises(S3ReadError, match=located(path) + ".*InternalError"):
        make_store(proxy, max_attempts=max_attempts).read(path)
    assert gets(proxy, object_path(path)) == ["internal"] * max_attempts


def test_missing_key_fails_at_once_naming_the_bucket_and_key(proxy):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="object not found: " + located("val2017/absent.jpg")):
        make_store(proxy).read("val2017/absent.jpg")
    assert time.monotonic() - start < 2.0
    assert gets(proxy, object_path("val2017/absent.jpg")) == [None]


def test_missing_bucket_fails_naming_the_bucket(proxy):
    with pytest.raises(FileNotFoundError, match=r"bucket 'no-such-bucket' does not exist"):
        S3ImageStore("no-such-bucket", endpoint_url=proxy.url).read("val2017/x.jpg")
    assert len(proxy.seen) == 1


@pytest.mark.parametrize(("failure", "detail"), [("denied", "AccessDenied"), (TRUNCATE, "")])
def test_denied_and_cut_short_reads_fail_once_naming_the_bucket_and_key(servers, proxy, failure, detail):
    path = servers.images[4]
    proxy.failures_by_path[object_path(path)] = [failure]
    with pytest.raises(S3ReadError, match=located(path) + f".*{detail}"):
        make_store(proxy).read(path)
    assert gets(proxy, object_path(path)) == [failure]


class StoreImages(Dataset):
    """Item i: (i, the bytes of image i, the reading process's id)."""

    def __init__(self, store: S3ImageStore, paths: list[str]) -> None:
        self.store = store
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, bytes, int]:
        return index, self.store.read(self.paths[index]), os.getpid()


def as_list(batch: list) -> list:
    return batch


def test_an_epoch_over_two_dataloader_workers_returns_every_image_once(servers, proxy):
    store = make_store(proxy)
    paths = servers.images
    store.read(paths[0])  # the parent's client and connection exist before the workers fork
    parent_ports = {seen.client_port for seen in proxy.seen}
    faults = {paths[1]: ["slowdown"], paths[4]: [RESET], paths[7]: [ABORT], paths[10]: ["internal", RESET]}
    for path, failures in faults.items():
        proxy.failures_by_path[object_path(path)] = list(failures)
    first_worker_request = len(proxy.seen)

    loader = DataLoader(
        StoreImages(store, paths), batch_size=2, num_workers=2, collate_fn=as_list, multiprocessing_context="fork"
    )
    items = [item for batch in loader for item in batch]

    assert sorted(index for index, _, _ in items) == list(range(IMAGE_COUNT))
    for index, content, _ in items:
        assert content == servers.objects[paths[index]], f"wrong bytes for {paths[index]}"
    worker_pids = {pid for _, _, pid in items}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert proxy.served_failures == 5
    for path in paths[1:]:
        assert gets(proxy, object_path(path)) == faults.get(path, []) + [None]
    # Each worker opened its own connections: none reused the parent's pooled socket across fork.
    assert not {seen.client_port for seen in proxy.seen[first_worker_request:]} & parent_ports


def test_store_pickles_without_client_or_credentials_and_reconnects(servers, proxy):
    store = make_store(proxy, retry_mode="adaptive", max_attempts=4)
    path = servers.images[5]
    assert store.read(path) == servers.objects[path]
    parent_ports = {seen.client_port for seen in proxy.seen}
    payload = pickle.dumps(store)
    assert SECRET_ACCESS_KEY.encode() not in payload and ACCESS_KEY_ID.encode() not in payload
    clone = pickle.loads(payload)
    assert (clone.bucket_name, clone.prefix, clone.retry_mode, clone.max_attempts) == (BUCKET, PREFIX, "adaptive", 4)
    assert clone.read(path) == servers.objects[path]
    assert proxy.seen[-1].client_port not in parent_ports


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bucket": "coco/train"}, "bare bucket name"),
        ({"bucket": "s3:coco"}, "bare bucket name"),
        ({"bucket": ""}, "bare bucket name"),
        ({"bucket": "coco", "retry_mode": "fast"}, "retry_mode must be one of"),
        ({"bucket": "coco", "max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"bucket": "coco", "max_attempts": 2.5}, "max_attempts must be an integer >= 1"),
        ({"bucket": "coco", "addressing_style": "host"}, "addressing_style must be"),
    ],
)
def test_bad_settings_are_rejected_with_the_setting_named(settings, message):
    with pytest.raises(ValueError, match=message):
        S3ImageStore(**settings)


# ------------------------------------------------------------------------------- through build_dataset
def s3_data(proxy: FaultProxy, cache: str, **extra) -> dict:
    """A `data:` section for the moto bucket behind the proxy."""
    return {"backend": "s3", "bucket": BUCKET, "prefix": PREFIX, "endpoint_url": proxy.url, "annotations_dir": cache,
            "image_scale": 0.25, "num_workers": 2, **extra}


def items_of(batch: list) -> list:
    return [(int(target["image_id"]), image.shape) for image, target in batch]


def test_build_dataset_reads_an_epoch_from_s3_with_faults_losing_and_repeating_nothing(servers, proxy, tmp_path):
    cache = str(tmp_path / "annotations")
    dataset = data.build_dataset("val", s3_data(proxy, cache, max_attempts=4))
    assert os.path.isfile(os.path.join(cache, "instances_val2017.json"))  # cached once, as for GCS
    assert len(dataset) == IMAGE_COUNT
    assert any(seen.method == "GET" and "list-type=2" in seen.path for seen in proxy.seen), "the check lists the images"
    paths = servers.images
    faults = {paths[0]: ["slowdown"], paths[3]: [RESET], paths[6]: [ABORT, "internal"], paths[9]: ["internal"]}
    for path, failures in faults.items():
        proxy.failures_by_path[object_path(path)] = list(failures)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=items_of, multiprocessing_context="fork")
    image_ids = [image_id for batch in loader for image_id, _ in batch]
    assert sorted(image_ids) == sorted(dataset.ids) and len(set(image_ids)) == IMAGE_COUNT
    assert proxy.served_failures == 5


def test_s3_data_check_names_a_missing_object(servers, proxy, tmp_path):
    cache = str(tmp_path / "annotations")
    with open(os.path.join(str(tmp_path), "val.json"), "w") as f:
        annotations = json.loads(servers.objects[ANNOTATIONS])
        annotations["images"][0]["file_name"] = "absent.jpg"
        json.dump(annotations, f)
    os.makedirs(cache)
    shutil.copy(os.path.join(str(tmp_path), "val.json"), os.path.join(cache, "instances_val2017.json"))
    expected = r"(?s)images in s3://coco-s3-test/datasets/coco/val2017:.*missing image: image id \d+ \(absent.jpg\)"
    with pytest.raises(ValueError, match=expected):
        data.build_dataset("val", s3_data(proxy, cache))
