"""Obtaining Determined 0.38.1's expconf schemas: download into the per-user cache, checksums, the cache
on later uses, and the errors when they cannot be obtained.

A real HTTP server on 127.0.0.1 serves a folder laid out like Determined's raw source files on GitHub
(``determined-ai/determined/0.38.1/schemas/expconf/v0/<name>``), filled with the schemas the other
tests use. Nothing here reaches the internet.
"""

import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from fixtures.expconf_schemas import require_schemas_root

from deformable_detr.tools import expconf

REPO_CONFIG = "distributed_gcs.yaml"


def _unused_local_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: the port was free a moment ago and is closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache, no $DET_SCHEMAS_DIR, and a download URL where nothing listens unless a test
    sets its own, so no test can fall back to GitHub."""
    cache_home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv(expconf.SCHEMAS_DIR_ENV, raising=False)
    monkeypatch.setenv(expconf.SCHEMAS_URL_ENV, _unused_local_url())
    expconf.load_schemas.cache_clear()
    yield cache_home
    expconf.load_schemas.cache_clear()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()


class SchemaServer:
    """Serves ``root`` on 127.0.0.1; ``folder`` is where the schema files lie, ``base_url`` the value
    for $DET_SCHEMAS_URL."""

    def __init__(self, root: Path) -> None:
        version = expconf.SCHEMAS_VERSION
        self.folder = root / "determined-ai" / "determined" / version / expconf.SCHEMAS_SOURCE_PATH
        self._httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
        )
        self._httpd.requests = []  # type: ignore[attr-defined]
        self._httpd.lock = threading.Lock()  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/determined-ai/determined/{version}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[str]:
        return list(self._httpd.requests)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()


def _schema_files(root: str) -> list[Path]:
    nested = Path(root) / "expconf" / "v0"
    folder = nested if nested.is_dir() else Path(root) / "expconf"
    return sorted(folder.glob("*.json"))


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SchemaServer]:
    source = _schema_files(require_schemas_root())
    served = SchemaServer(tmp_path / "www")
    served.folder.mkdir(parents=True)
    for path in source:
        shutil.copyfile(path, served.folder / path.name)
    monkeypatch.setenv(expconf.SCHEMAS_URL_ENV, served.base_url)
    yield served
    served.stop()


def _cache_entries(cache_home: Path) -> list[str]:
    parent = cache_home / "deformable_detr"
    return sorted(path.name for path in parent.iterdir()) if parent.exists() else []


def test_shipped_checksums_are_those_of_the_schemas_in_use() -> None:
    files = _schema_files(require_schemas_root())
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files} == expconf.SCHEMA_SHA256


def test_first_use_downloads_the_schemas_and_validates_a_repository_config(
    server: SchemaServer, isolated_cache: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    result = subprocess.run(
        [sys.executable, "-m", "deformable_detr.tools.expconf", REPO_CONFIG],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{REPO_CONFIG}: valid"
    notice = f"downloading Determined {expconf.SCHEMAS_VERSION}'s expconf schemas from {server.base_url}"
    assert notice in result.stderr
    cached = expconf.schemas_cache_dir()
    assert cached.parent.parent == isolated_cache
    assert sorted(path.name for path in (cached / "expconf").iterdir()) == sorted(expconf.SCHEMA_SHA256)
    assert len(server.requests) == len(expconf.SCHEMA_SHA256)


def test_later_uses_read_the_cache_without_the_server(
    server: SchemaServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert expconf.find_schemas_dir() == expconf.schemas_cache_dir()
    server.stop()
    expconf.load_schemas.cache_clear()
    assert expconf.main([os.path.join(REPO_ROOT, REPO_CONFIG)]) == 0
    assert f"{REPO_CONFIG}: valid" in capsys.readouterr().out


def test_corrupted_download_fails_naming_the_file_and_caches_nothing(
    server: SchemaServer, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = server.folder / "searcher.json"
    corrupted = served.read_bytes().replace(b'"name"', b'"nam3"', 1)
    served.write_bytes(corrupted)
    expected = expconf.SCHEMA_SHA256["searcher.json"]
    actual = hashlib.sha256(corrupted).hexdigest()
    with pytest.raises(expconf.SchemaChecksumError) as caught:
        expconf.find_schemas_dir()
    assert "searcher.json" in str(caught.value)
    assert actual in str(caught.value) and expected in str(caught.value)
    # Only the lock file: no cache folder, no staging folder.
    assert _cache_entries(isolated_cache) == [f"{expconf.schemas_cache_dir().name}.lock"]
    assert expconf.main([os.path.join(REPO_ROOT, REPO_CONFIG)]) == 2
    assert "searcher.json" in capsys.readouterr().err


def test_missing_file_on_the_server_is_an_error_naming_its_url(server: SchemaServer, isolated_cache: Path) -> None:
    (server.folder / "searcher.json").unlink()
    with pytest.raises(expconf.SchemasNotFoundError, match=r"searcher\.json: HTTP 404"):
        expconf.find_schemas_dir()
    assert not expconf.schemas_cache_dir().exists()


def test_unreachable_server_is_a_clear_error_and_the_command_exits_2(
    isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = os.environ[expconf.SCHEMAS_URL_ENV]
    assert expconf.main([os.path.join(REPO_ROOT, REPO_CONFIG)]) == 2
    err = capsys.readouterr().err
    assert "expconf schemas not found" in err
    assert url in err
    assert "Run once with network access" in err
    assert f"set {expconf.SCHEMAS_DIR_ENV} to the schemas/ folder" in err
    assert not expconf.schemas_cache_dir().exists()


def test_damaged_cache_is_an_error_naming_the_file(server: SchemaServer) -> None:
    cached = expconf.download_schemas() / "expconf" / "length.json"
    cached.write_text(json.dumps({"damaged": True}))
    with pytest.raises(expconf.SchemaChecksumError, match=r"length\.json has sha256 [0-9a-f]{64}, expected"):
        expconf.find_schemas_dir()


def test_concurrent_first_uses_download_once(server: SchemaServer) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        roots = list(pool.map(lambda _: expconf.download_schemas(), range(3)))
    assert roots == [expconf.schemas_cache_dir()] * 3
    assert len(server.requests) == len(expconf.SCHEMA_SHA256)


def test_override_folder_is_used_without_download(monkeypatch: pytest.MonkeyPatch) -> None:
    root = require_schemas_root()
    monkeypatch.setenv(expconf.SCHEMAS_DIR_ENV, root)
    assert expconf.find_schemas_dir() == Path(root)
    assert not expconf.schemas_cache_dir().exists()
