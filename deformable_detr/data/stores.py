"""Where image and annotation bytes come from: the `ImageStore` protocol, a folder on disk, and copying one
object of a remote store to a local file once."""

import logging
import os
import tempfile
from typing import Protocol

from filelock import FileLock

logger = logging.getLogger(__name__)


class ImageStore(Protocol):
    """Where image bytes come from; `path` is relative to the dataset root, e.g. 'train2017/x.jpg'."""

    def read(self, path: str) -> bytes: ...

    def describe(self, path: str) -> str:
        """A full location for error messages (file path or gs:// URL)."""
        ...


class LocalImageStore:
    """Images in a folder on disk."""

    def __init__(self, root: str) -> None:
        self.root = root

    def read(self, path: str) -> bytes:
        with open(os.path.join(self.root, path), "rb") as file:
            return file.read()

    def describe(self, path: str) -> str:
        return os.path.join(self.root, path)


def cache_file(store: ImageStore, path: str, destination: str) -> str:
    """Copy `path` of `store` to the local file `destination` once (atomic rename; a lock for concurrent
    processes) and return `destination`."""
    if os.path.exists(destination):
        return destination
    folder = os.path.dirname(destination) or "."
    os.makedirs(folder, exist_ok=True)
    with FileLock(destination + ".lock"):
        if os.path.exists(destination):
            return destination
        logger.info("caching %s to %s", store.describe(path), destination)
        data = store.read(path)
        handle, temporary = tempfile.mkstemp(prefix=".part-", dir=folder)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, destination)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    return destination
