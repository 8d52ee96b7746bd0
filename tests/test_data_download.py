"""The local backend's download of the COCO zips, against a real HTTP server on 127.0.0.1."""

import http.server
import io
import multiprocessing
import os
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator

import pytest

import data
from deformable_detr.data.download import CorruptArchiveError, DownloadError, download_file
from deformable_detr.data.synthetic import write_split


class ZipServer(http.server.ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes) with HTTP Range support.

    `cut` lists paths whose next answer announces the full length but closes after half the body;
    `ignore_range` makes the server answer 200 with the whole file to Range requests.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ZipHandler)
        self.files: dict[str, bytes] = {}
        self.cut: list[str] = []
        self.ignore_range = False
        self.requests: Counter = Counter()
        self.range_requests: list[str] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ZipHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: ZipServer = self.server
        with server.lock:
            server.requests[self.path] += 1
            cut = self.path in server.cut
            if cut:
                server.cut.remove(self.path)
        content = server.files.get(self.path)
        if content is None:
            self.send_error(404)
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and not server.ignore_range:
            server.range_requests.append(range_header)
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(content):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        else:
            self.send_response(200)
        body = content[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def folder_zip(root: str, folders: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder in folders:
            for name in sorted(os.listdir(os.path.join(root, folder))):
                archive.write(os.path.join(root, folder, name), f"{folder}/{name}")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, bytes]:
    """The three official zips' layout, built from a small synthetic dataset."""
    root = str(tmp_path_factory.mktemp("source"))
    write_split(root, "train", 4, 96, seed=1)
    write_split(root, "val", 3, 96, seed=1)
    return {
        "/zips/train2017.zip": folder_zip(root, ["train2017"]),
        "/zips/val2017.zip": folder_zip(root, ["val2017"]),
        "/annotations/annotations_trainval2017.zip": folder_zip(root, ["annotations"]),
    }


@pytest.fixture
def server(zips) -> Iterator[ZipServer]:
    zip_server = ZipServer()
    zip_server.files = dict(zips)
    thread = threading.Thread(target=zip_server.serve_forever, daemon=True)
    thread.start()
    yield zip_server
    zip_server.shutdown()
    zip_server.server_close()


def local(root, server: ZipServer) -> dict:
    return {"backend": "local", "data_dir": str(root), "download_url": server.base_url, "image_scale": 0.2}


def leftovers(root) -> list[str]:
    return sorted(name for name in os.listdir(root) if name.endswith((".zip", ".part")) or name.startswith(".extract"))


def test_absent_data_is_downloaded_extracted_and_the_zips_removed(server, tmp_path):
    dataset = data.build_dataset("val", local(tmp_path, server))
    assert len(dataset) == 3
    dataset[0]
    assert sorted(os.listdir(tmp_path / "val2017")) == sorted(f["file_name"] for f in dataset.coco.imgs.values())
    assert leftovers(tmp_path) == []
    train = data.build_dataset("train", local(tmp_path, server))  # annotations are there: only images download
    assert len(train) == 4
    assert server.requests["/annotations/annotations_trainval2017.zip"] == 1
    assert server.requests["/zips/train2017.zip"] == 1


def test_present_data_is_not_downloaded_again(server, tmp_path):
    data.build_dataset("val", local(tmp_path, server))
    data.build_dataset("val", local(tmp_path, server))
    assert sum(server.requests.values()) == 2


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    server.cut = ["/zips/val2017.zip"]
    destination = str(tmp_path / "val2017.zip")
    download_file(f"{server.base_url}/zips/val2017.zip", destination)
    with open(destination, "rb") as file:
        assert file.read() == server.files["/zips/val2017.zip"]
    assert server.requests["/zips/val2017.zip"] == 2
    half = len(server.files["/zips/val2017.zip"]) // 2
    assert server.range_requests == [f"bytes={half}-"]
    assert not os.path.exists(destination + ".part")


def test_interrupted_transfer_restarts_when_the_server_ignores_range(server, tmp_path):
    server.cut = ["/zips/val2017.zip"]
    server.ignore_range = True
    dataset = data.build_dataset("val", local(tmp_path, server))
    assert len(dataset) == 3
    assert server.requests["/zips/val2017.zip"] == 2
    assert leftovers(tmp_path) == []


def test_corrupt_zip_gives_a_clear_error_and_leaves_nothing_extracted(server, tmp_path):
    content = bytearray(server.files["/zips/val2017.zip"])
    # Flip bytes inside the first member's data: the archive opens but a CRC check fails.
    content[100:110] = bytes(b ^ 0xFF for b in content[100:110])
    server.files["/zips/val2017.zip"] = bytes(content)
    with pytest.raises(CorruptArchiveError, match=r"val2017\.zip.*CRC.*downloaded from http://127\.0\.0\.1"):
        data.build_dataset("val", local(tmp_path, server))
    assert not os.path.exists(tmp_path / "val2017")
    assert leftovers(tmp_path) == []
    server.files["/zips/val2017.zip"] = b"this is not a zip file" * 100
    with pytest.raises(CorruptArchiveError, match="not a valid zip"):
        data.build_dataset("val", local(tmp_path, server))
    assert not os.path.exists(tmp_path / "val2017") and leftovers(tmp_path) == []


def test_missing_zip_fails_with_the_url(server, tmp_path):
    del server.files["/zips/val2017.zip"]
    with pytest.raises(DownloadError, match=rf"{server.base_url}/zips/val2017.zip failed: HTTP 404"):
        data.build_dataset("val", local(tmp_path, server))


def test_download_false_names_the_missing_paths(server, tmp_path):
    with pytest.raises(FileNotFoundError, match="val2017"):
        data.build_dataset("val", {**local(tmp_path, server), "download": False})
    assert sum(server.requests.values()) == 0


def test_annotations_dir_elsewhere_is_not_downloaded_into(server, tmp_path):
    elsewhere = str(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match=rf"expected {elsewhere}/instances_val2017.json"):
        data.build_dataset("val", {**local(tmp_path / "coco", server), "annotations_dir": elsewhere})
    assert sum(server.requests.values()) == 0


def _build(config: dict) -> None:
    data.build_dataset("val", config)


def test_concurrent_processes_download_once(server, tmp_path):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_build, args=(local(tmp_path, server),)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert server.requests["/zips/val2017.zip"] == 1
    assert server.requests["/annotations/annotations_trainval2017.zip"] == 1
