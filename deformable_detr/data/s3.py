"""Images and annotation files from an S3 bucket (AWS or any S3-compatible store), with botocore's retries.
Annotation files are copied to a local cache with `deformable_detr.data.stores.cache_file`."""

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

RETRY_MODES = ("legacy", "standard", "adaptive")
# Error codes S3 answers for an absent object: GetObject says NoSuchKey, a HEAD only has the status.
MISSING_KEY_CODES = ("NoSuchKey", "404", "NotFound")


class S3ReadError(OSError):
    """An object could not be read for a reason other than its absence (denied, throttled past the last
    attempt, connection lost, body cut short); the message names the bucket and the key."""


class S3ImageStore:
    """Reads objects `<prefix>/<path>` of one bucket.

    Retries are botocore's own: `retry_mode` 'standard' (exponential backoff with jitter for throttling such
    as 503 SlowDown, 5xx answers and connection errors), 'adaptive' (the same plus client-side rate limiting)
    or 'legacy'; `max_attempts` counts every attempt, the first included (as AWS_MAX_ATTEMPTS does). These two
    settings take precedence over AWS_RETRY_MODE and AWS_MAX_ATTEMPTS. A body cut short after the answer began
    is not retried by botocore: it raises S3ReadError rather than returning short bytes.
    A missing object raises FileNotFoundError naming the bucket and the key, without retrying; any other
    failure raises S3ReadError naming them, chained to botocore's exception.

    Credentials come from the AWS chain (environment variables, shared config and credentials files, container
    or instance roles), never from here. `endpoint_url` points at an S3-compatible server (MinIO, Ceph, ...);
    when None, botocore's own lookup applies (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile, else AWS).
    `region` None takes the region from the chain. `addressing_style` None lets botocore choose (path style
    for a custom endpoint, virtual-hosted for AWS); 'path' or 'virtual' force one.
    The client is created lazily in each process, as DataLoader workers must not share one across fork, and
    the store pickles without it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        retry_mode: str = "standard",
        max_attempts: int = 10,
        region: str | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        addressing_style: str | None = None,
    ) -> None:
        if not bucket or "/" in bucket or bucket.startswith("s3:"):
            raise ValueError(f"S3 bucket must be a bare bucket name (a folder inside goes in prefix), got {bucket!r}")
        if retry_mode not in RETRY_MODES:
            raise ValueError(f"S3 retry_mode must be one of {RETRY_MODES}, got {retry_mode!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"S3 max_attempts must be an integer >= 1 (the first attempt counts): {max_attempts!r}")
        if addressing_style not in (None, "auto", "path", "virtual"):
            raise ValueError(f"S3 addressing_style must be None, 'auto', 'path' or 'virtual', got {addressing_style!r}")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.retry_mode = retry_mode
        self.max_attempts = max_attempts
        self.region = region
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.addressing_style = addressing_style
        self._client: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = state["_pid"] = None
        return state

    def _get_client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            config = Config(
                retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
                connect_timeout=self.connect_timeout_s,
                read_timeout=self.read_timeout_s,
                s3={"addressing_style": self.addressing_style} if self.addressing_style else None,
            )
            # A session per client: boto3's default session is shared module state, not safe across threads.
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
            self._pid = os.getpid()
        return self._client

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def describe(self, path: str) -> str:
        return f"s3://{self.bucket_name}/{self.key(path)}"

    def read(self, path: str) -> bytes:
        key = self.key(path)
        where = f"bucket {self.bucket_name!r}, key {key!r} ({self.describe(path)})"
        try:
            # Reading the whole body hands the connection back to the pool for the next object.
            return self._get_client().get_object(Bucket=self.bucket_name, Key=key)["Body"].read()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in MISSING_KEY_CODES:
                raise FileNotFoundError(f"object not found: {where}") from error
            if code == "NoSuchBucket":
                raise FileNotFoundError(f"bucket {self.bucket_name!r} does not exist: {where}") from error
            hint = ""
            if code == "AccessDenied":
                hint = " (S3 also answers AccessDenied for a missing key when the credentials lack s3:ListBucket)"
            raise S3ReadError(f"cannot read {where}: {error}{hint}") from error
        except BotoCoreError as error:
            raise S3ReadError(f"cannot read {where}: {error}") from error

    def list_files(self, folder: str) -> set[str]:
        """The names of every object under `folder` (relative to it), for the data check: one listing
        request per 1,000 objects, with the same retries as reads."""
        folder_key = self.key(folder).rstrip("/") + "/"
        names: set[str] = set()
        try:
            for page in self._get_client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket_name, Prefix=folder_key
            ):
                names.update(item["Key"][len(folder_key):] for item in page.get("Contents", []))
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise FileNotFoundError(f"bucket {self.bucket_name!r} does not exist") from error
            hint = " (the data check lists the images: it needs s3:ListBucket, or data.check: off)"
            raise S3ReadError(f"cannot list s3://{self.bucket_name}/{folder_key}: {error}{hint}") from error
        except BotoCoreError as error:
            raise S3ReadError(f"cannot list s3://{self.bucket_name}/{folder_key}: {error}") from error
        return names
