"""Fetching the COCO 2017 zips: resumable HTTP download, zip verification, all-or-nothing extraction."""

import http.client
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile

from filelock import FileLock
from tqdm import tqdm

from deformable_detr.data import paths

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A download that could not be completed."""


class CorruptArchiveError(RuntimeError):
    """A downloaded zip that fails verification."""


class _ShortTransfer(Exception):
    """The server closed the connection before sending the announced length."""


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: str, timeout: float) -> None:
    """One attempt: continue `part` from its current size when the server honours Range, else restart."""
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The partial file is not a prefix the server can continue (e.g. the file changed): restart.
            logger.warning("server refused to resume %s at byte %d; restarting", url, offset)
            os.remove(part)
            raise _ShortTransfer("range not satisfiable") from error
        raise
    with response:
        content_range = response.headers.get("Content-Range", "")
        if offset and (response.status != 206 or not content_range.startswith(f"bytes {offset}-")):
            logger.warning("server did not resume %s at byte %d; restarting from byte 0", url, offset)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        name = os.path.basename(part[: -len(".part")])
        with open(part, "ab" if offset else "wb") as file, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=name, mininterval=2.0
        ) as progress:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except http.client.IncompleteRead as error:
                    file.write(error.partial)
                    raise _ShortTransfer(f"connection closed after {offset + progress.n} bytes") from error
                if not chunk:
                    break
                file.write(chunk)
                progress.update(len(chunk))
    if total is not None and os.path.getsize(part) != total:
        raise _ShortTransfer(f"got {os.path.getsize(part)} of {total} bytes")


def download_file(url: str, destination: str, attempts: int = 5, timeout: float = 60.0) -> None:
    """Download `url` to `destination` through `destination + '.part'`, renamed only when complete.

    An interrupted transfer resumes from the bytes already on disk (HTTP Range), or restarts when the server
    cannot resume; the backoff between attempts doubles from 1 s. HTTP errors other than 416 fail at once.
    """
    part = destination + ".part"
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, timeout)
            os.replace(part, destination)
            return
        except urllib.error.HTTPError as error:
            raise DownloadError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
        except (_ShortTransfer, urllib.error.URLError, ConnectionError, TimeoutError) as error:
            if attempt == attempts:
                raise DownloadError(f"download of {url} failed after {attempts} attempts: {error}") from error
            delay = 2.0 ** (attempt - 1)
            logger.warning("download of %s interrupted (%s); attempt %d/%d in %.0f s", url, error, attempt + 1, attempts, delay)
            time.sleep(delay)


def verify_zip(path: str) -> None:
    """Check the archive's structure and every member's CRC; raises CorruptArchiveError."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except zipfile.BadZipFile as error:
        raise CorruptArchiveError(f"{path} is not a valid zip archive: {error}") from error
    if bad_member is not None:
        raise CorruptArchiveError(f"{path} is corrupt: CRC mismatch in member {bad_member!r}")


def _move_into(source: str, destination: str) -> None:
    """Move `source` to `destination`, merging folders that already exist there."""
    if os.path.isdir(source) and os.path.isdir(destination):
        for entry in os.listdir(source):
            _move_into(os.path.join(source, entry), os.path.join(destination, entry))
        return
    os.replace(source, destination)


def extract_zip(path: str, destination: str) -> None:
    """Extract into a staging folder next to `destination`, then move the entries into place, so that a
    failure leaves nothing half-extracted in `destination`."""
    staging = tempfile.mkdtemp(prefix=".extract-", dir=destination)
    try:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(staging)
        for entry in os.listdir(staging):
            _move_into(os.path.join(staging, entry), os.path.join(destination, entry))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_and_extract(url: str, destination: str) -> None:
    """Download the zip at `url`, verify it, extract it into `destination` and delete it.

    A corrupt zip is deleted (so that the next run downloads it again) and raises CorruptArchiveError naming
    the URL; nothing is extracted from it.
    """
    os.makedirs(destination, exist_ok=True)
    archive = os.path.join(destination, os.path.basename(url))
    if not os.path.exists(archive):
        download_file(url, archive)
    try:
        verify_zip(archive)
    except CorruptArchiveError as error:
        os.remove(archive)
        raise CorruptArchiveError(f"{error} (downloaded from {url}; deleted, the next run downloads it again)") from error
    logger.info("extracting %s into %s", archive, destination)
    extract_zip(archive, destination)
    os.remove(archive)


def coco_zip_urls(base_url: str, image_set: str) -> dict[str, str]:
    """{'images': ..., 'annotations': ...} zip URLs of one image set under the official site's layout."""
    base = base_url.rstrip("/")
    return {
        "images": f"{base}/zips/{paths.image_folder(image_set)}.zip",
        "annotations": f"{base}/annotations/annotations_trainval2017.zip",
    }


def ensure_coco(data_dir: str, annotation_file: str, image_set: str, download: bool, base_url: str) -> None:
    """Make `<data_dir>/<image_set>2017/` and `annotation_file` exist, downloading the official zips if allowed.

    A file lock in `data_dir` makes one process per node download while the others wait for it.
    """
    image_dir = os.path.join(data_dir, paths.image_folder(image_set))

    def missing() -> dict[str, str]:
        return {
            kind: path
            for kind, path in (("images", image_dir), ("annotations", annotation_file))
            if not os.path.exists(path)
        }

    if not missing():
        return
    if not download:
        raise FileNotFoundError(f"COCO data not found: expected {sorted(missing().values())} (data.download is false)")
    official = paths.annotation_file(data_dir, image_set)
    if "annotations" in missing() and os.path.abspath(annotation_file) != os.path.abspath(official):
        # The zip extracts to <data_dir>/annotations: it cannot fill a folder named elsewhere.
        raise FileNotFoundError(
            f"annotation file not found: expected {annotation_file} (data.annotations_dir is set, so it is not "
            f"downloaded; leave annotations_dir unset to download into {os.path.dirname(official)})"
        )
    os.makedirs(data_dir, exist_ok=True)
    with FileLock(os.path.join(data_dir, ".download.lock")):
        urls = coco_zip_urls(base_url, image_set)
        for kind in missing():  # re-checked under the lock: another process may have finished meanwhile
            fetch_and_extract(urls[kind], data_dir)
    still_missing = missing()
    if still_missing:
        raise FileNotFoundError(f"COCO data not found after download: expected {sorted(still_missing.values())}")
