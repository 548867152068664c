"""Object stores: a local folder (the embedded default) and S3 or anything that speaks it.

One small contract, `ObjectStore`, so every stage reads and writes the lake the same way
whatever holds it. Writes are atomic (nothing half-written is ever visible under its final
key) and keys are validated before any I/O, so a hostile key never escapes the store.
"""

from __future__ import annotations

import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from radflow.errors import RadflowError
from radflow.keys import sha256_bytes

_TMP_DIR = ".radflow-tmp"
_MAX_KEY_BYTES = 1024  # S3's limit on key length


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key; raise ValueError naming the problem."""
    if not key:
        raise ValueError("object key is empty")
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise ValueError(f"object key is longer than {_MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise ValueError("object key is an absolute path")
    if "\\" in key:
        raise ValueError("object key contains a backslash")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError("object key contains a control character")
    parts = key.split("/")
    if any(p in ("..", ".") for p in parts):
        raise ValueError("object key contains a '.' or '..' segment")
    if any(p == "" for p in parts[:-1]) or key.endswith("/"):
        raise ValueError("object key contains an empty segment")
    if parts[0] == _TMP_DIR:
        raise ValueError(f"object keys under {_TMP_DIR}/ are reserved")
    return key


_S3_HINTS = {
    "NoSuchBucket": "the bucket does not exist: create it, or correct the bucket's name",
    "NoCredentialsError": "no S3 credentials found: set AWS_ACCESS_KEY_ID and"
    " AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "PartialCredentialsError": "incomplete S3 credentials: set both AWS_ACCESS_KEY_ID and"
    " AWS_SECRET_ACCESS_KEY",
    "InvalidAccessKeyId": "the endpoint does not know this access key: check AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check"
    " AWS_SECRET_ACCESS_KEY",
    "AccessDenied": "the credentials may not do this in this bucket: check the bucket's policy",
}
_NETWORK_HINT = (
    "check the endpoint (RADFLOW_S3_ENDPOINT_URL) and the network; RADFLOW_S3_MAX_ATTEMPTS,"
    " RADFLOW_S3_CONNECT_TIMEOUT and RADFLOW_S3_READ_TIMEOUT set the retries"
)


def _s3_hint(code: str) -> str:
    """What to do about an S3 failure, by the error's code or botocore's exception name."""
    return _S3_HINTS.get(code, _NETWORK_HINT)


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a valid key ending in '/'."""
    if prefix:
        validate_key(prefix.rstrip("/") if prefix.endswith("/") else prefix)
    return prefix


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: float = (
        0.0  # when it was last written: seconds since the epoch (mtime, S3's LastModified)
    )


def _missing(key: str) -> str:
    """Inbox keys hold folder names (PHI), so a missing object is named by its key's hash."""
    return f"no object at key sha256:{sha256_bytes(key.encode())[:12]}"


class StoreError(RadflowError):
    """Object storage failed for good (boto3's retries are spent): one line naming the
    operation, the bucket and a hash of the key, never the key itself (it may hold PHI)."""


class ObjectStore(ABC):
    """What every stage needs from object storage, and nothing more."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def download(self, key: str, dest: Path) -> None:
        """Stream an object into `dest` (bounded memory), appearing there only when complete."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under `prefix`, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """The object as a file this process can read in place, where the store is a
        folder; None where it must be downloaded."""
        validate_key(key)
        return None

    def put_text(self, key: str, text: str) -> None:
        self.put_bytes(key, text.encode())

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode()


def _atomic_destination(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")


class LocalStore(ObjectStore):
    """A folder as a store; temporary files live under `<root>/.radflow-tmp/` until renamed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = self.root / validate_key(key)
        # A symlink inside the root must not lead a read or write out of it.
        if not self._inside(path):
            raise ValueError("object key resolves outside the store root")
        return path

    def _inside(self, path: Path | str) -> bool:
        real = Path(path).resolve()
        return real == self.root or self.root in real.parents

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._tmp_path()
        try:
            tmp.write_bytes(data)
            self._commit(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        tmp = self._tmp_path()
        try:
            shutil.copyfile(path, tmp)
            self._commit(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def _tmp_path(self) -> Path:
        tmp_dir = self.root / _TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)  # the root too: a worker outlives a deleted lake
        return tmp_dir / uuid.uuid4().hex

    @staticmethod
    def _commit(tmp: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(_missing(key))
        return path.read_bytes()

    def download(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise FileNotFoundError(_missing(key))
        part = _atomic_destination(dest)
        try:
            shutil.copyfile(src, part)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        found: list[ObjectInfo] = []
        # Walk only the folder the prefix names, not the whole lake.
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not self._inside(start):  # a symlinked folder leading out of the root
            return
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != _TMP_DIR]
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                path = os.path.join(dirpath, name)
                if os.path.islink(path) and not (self._inside(path) and os.path.isfile(path)):
                    continue  # a symlink leading out of the root, or dangling
                st = os.stat(path)
                found.append(
                    ObjectInfo(key, st.st_size, f"{st.st_size:x}-{st.st_mtime_ns:x}", st.st_mtime)
                )
        yield from sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store(ObjectStore):
    """A bucket (and optional prefix) on AWS S3, MinIO, Ceph RGW or any S3-compatible server.

    Transient failures (connection refused or reset, timeouts, 5xx, throttling) are retried
    by botocore's adaptive mode: exponential backoff with jitter, up to `max_attempts` tries
    per request, plus a client-side rate limit after throttling. Streamed downloads also
    resume through s3transfer's own retries. What is left after that is a `StoreError`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = 64 * 1024 * 1024,
        max_attempts: int = 8,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if self.prefix:
            validate_key(self.prefix.rstrip("/"))
        self.url = f"s3://{bucket}/{self.prefix}"
        self.max_attempts = max_attempts
        config = Config(
            retries={"mode": "adaptive", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold // 4, 5 * 1024 * 1024),
            max_concurrency=4,
        )

    def _key(self, key: str) -> str:
        full = self.prefix + validate_key(key)
        if len(full.encode()) > _MAX_KEY_BYTES:
            raise ValueError(f"prefixed object key is longer than {_MAX_KEY_BYTES} bytes")
        return full

    @contextmanager
    def _failures(self, operation: str, full_key: str) -> Iterator[None]:
        """botocore's and s3transfer's errors name the endpoint URL, and so the key: replace
        them by one PHI-free line (the original is not chained, so tracebacks drop it too)."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as err:
            cause: BaseException = err
            while isinstance(cause, Boto3Error) and cause.__context__ is not None:
                cause = cause.__context__  # S3UploadFailedError wraps the real failure
            if isinstance(cause, ClientError):
                meta = cause.response.get("ResponseMetadata", {})
                code = cause.response.get("Error", {}).get("Code", "?")
                reason = f"{code} (HTTP {meta.get('HTTPStatusCode', '?')})"
                attempts = f"{int(meta.get('RetryAttempts', 0)) + 1} attempt(s)"
            else:
                reason = type(cause).__name__
                attempts = f"up to {self.max_attempts} attempts"
            raise StoreError(
                f"S3 {operation} failed for object sha256:{sha256_bytes(full_key.encode())[:12]}"
                f" in bucket {self.bucket}: {reason}, after {attempts}",
                hint=_s3_hint(code if isinstance(cause, ClientError) else type(cause).__name__),
            ) from None

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        with self._failures("put", full):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        # An S3 object (multipart included) becomes visible only once complete: atomic.
        full = self._key(key)
        with self._failures("upload", full):
            self.client.upload_file(str(path), self.bucket, full, Config=self.transfer)

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        with self._failures("get", full):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            except self.client.exceptions.NoSuchKey:
                raise FileNotFoundError(_missing(key)) from None
            data: bytes = body.read()
        return data

    def download(self, key: str, dest: Path) -> None:
        full = self._key(key)
        if not self.exists(key):
            raise FileNotFoundError(_missing(key))
        part = _atomic_destination(dest)
        try:
            with self._failures("download", full):
                self.client.download_file(self.bucket, full, str(part), Config=self.transfer)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._key(key)
        with self._failures("head", full):
            try:
                self.client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        with self._failures("list", self.prefix + prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        obj["Key"][len(self.prefix) :],
                        int(obj["Size"]),
                        obj["ETag"].strip('"'),
                        obj["LastModified"].timestamp(),
                    )

    def delete(self, key: str) -> None:
        full = self._key(key)
        with self._failures("delete", full):
            self.client.delete_object(Bucket=self.bucket, Key=full)


def file_url_path(url: str) -> Path:
    """The folder of a `file://` URL: `file:///abs/path` or `file://./rel/path`."""
    parsed = urlparse(url)
    # Percent-decoded, as `Path.as_uri()` (and so `LocalStore.url`) encodes; "localhost" = "".
    netloc = "" if parsed.netloc == "localhost" else parsed.netloc
    return Path(unquote(netloc + parsed.path))


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible server: endpoint, region, botocore's retries and timeouts.

    The store's own small options type, so the store never imports the settings;
    `radflow.config.Settings.s3_options()` builds one from `RADFLOW_S3_*`. The defaults are
    `S3Store`'s."""

    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


def open_store(url: str, s3: S3Options | None = None) -> ObjectStore:
    """A store from a URL: `file:///abs/path`, `file://./rel/path`, a bare path, or `s3://bucket/prefix`.

    `s3` applies to an `s3://` URL only; without it the client takes `S3Options()`."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"S3 URL has no bucket: {url}")
        options = s3 if s3 is not None else S3Options()
        return S3Store(
            parsed.netloc,
            parsed.path.lstrip("/"),
            endpoint_url=options.endpoint_url,
            region=options.region,
            max_attempts=options.max_attempts,
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
        )
    if parsed.scheme == "file":
        return LocalStore(file_url_path(url))
    if parsed.scheme == "":
        return LocalStore(Path(url))
    raise ValueError(f"unsupported store URL scheme {parsed.scheme!r}; use file:// or s3://")
