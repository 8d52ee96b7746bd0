"""Images and annotation files from a Google Cloud Storage bucket, with bounded retries."""

import os
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def make_client() -> storage.Client:
    """A storage client: application default credentials, or anonymous ones against an emulator."""
    if os.environ.get(EMULATOR_ENV):
        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


class GcsImageStore:
    """Reads blobs `<path>` of one bucket.

    Transient errors (429, 5xx, connection resets, timeouts: the library's own retry predicate) are retried
    with exponential backoff from `initial_backoff_s`, doubling, for at most `retry_timeout_s` in total.
    A missing blob raises FileNotFoundError naming the bucket and the blob, without retrying.
    The client is created lazily in each process, as DataLoader workers must not share one across fork.
    """

    def __init__(
        self, bucket: str, retry_timeout_s: float = 120.0, initial_backoff_s: float = 1.0, request_timeout_s: float = 60.0
    ) -> None:
        self.bucket_name = bucket
        self.request_timeout_s = request_timeout_s
        self.retry = DEFAULT_RETRY.with_timeout(retry_timeout_s).with_delay(
            initial=initial_backoff_s, maximum=max(initial_backoff_s, 32.0), multiplier=2.0
        )
        self._bucket: storage.Bucket | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_bucket"] = state["_pid"] = None
        return state

    def _get_bucket(self) -> storage.Bucket:
        if self._bucket is None or self._pid != os.getpid():
            self._bucket = make_client().bucket(self.bucket_name)
            self._pid = os.getpid()
        return self._bucket

    def read(self, path: str) -> bytes:
        try:
            return self._get_bucket().blob(path).download_as_bytes(retry=self.retry, timeout=self.request_timeout_s)
        except api_exceptions.NotFound as error:
            raise FileNotFoundError(
                f"blob not found: bucket {self.bucket_name!r}, blob {path!r} ({self.describe(path)})"
            ) from error

    def describe(self, path: str) -> str:
        return f"gs://{self.bucket_name}/{path}"

    def list_files(self, folder: str) -> set[str]:
        """The names of every blob under `folder` (relative to it), for the data check."""
        prefix = folder.rstrip("/") + "/"
        blobs = self._get_bucket().list_blobs(prefix=prefix, retry=self.retry, timeout=self.request_timeout_s)
        return {blob.name[len(prefix):] for blob in blobs}
