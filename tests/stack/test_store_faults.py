"""Reliability of the store: S3 faults through a fault-injecting proxy, a server of its own per
test whose stalls and throttling cost real timeouts (45 s in all).

The proxy (`support/faultproxy.py`) sits between boto3 and moto's server on loopback and breaks
chosen requests: connection resets, stalls past the read timeout, 500 and 503 answers.
Each test asserts that the faults really happened (the proxy counts them) and that what
came through is exact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.faultproxy import FAULTS, FaultProxy

from radflow.store import S3Store, StoreError

pytestmark = pytest.mark.stack

MiB = 1024 * 1024
READ_TIMEOUT = 0.5  # a stalled request is given up after this, then retried


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server) as p:
        yield p


def proxied_store(proxy: FaultProxy, bucket: str, **kwargs: Any) -> S3Store:
    options: dict[str, Any] = {
        "endpoint_url": proxy.url,
        "region": "us-east-1",
        "read_timeout": READ_TIMEOUT,
        "connect_timeout": 2.0,
        **kwargs,
    }
    return S3Store(bucket, "lake", **options)


def raw_get(s3_client: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3_client.get_object(Bucket=bucket, Key=f"lake/{key}")["Body"].read()
    return data


# ----------------------------------------------------------------------- one operation, one fault


# A stall costs a read timeout per retry; a 503 SlowDown makes adaptive mode slow the whole
# client down (it is throttling): those two take 6-12 s.
@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_retried_on_every_operation(
    proxy: FaultProxy, s3_bucket: str, s3_client: Any, tmp_path: Path, fault: str
) -> None:
    store = proxied_store(proxy, s3_bucket)
    data = os.urandom(300_000)

    proxy.plan(fault)
    store.put_bytes("a/one.bin", data)
    assert proxy.injected[fault] == 1
    assert raw_get(s3_client, s3_bucket, "a/one.bin") == data  # exactly once, exact bytes

    proxy.plan(fault)
    assert store.get_bytes("a/one.bin") == data
    proxy.plan(fault)
    assert store.exists("a/one.bin") and proxy.injected[fault] == 3

    proxy.plan(fault)
    assert [(i.key, i.size) for i in store.list("a/")] == [("a/one.bin", len(data))]

    proxy.plan(fault, match=lambda method, path: method == "GET")  # the body, not the HEAD
    store.download("a/one.bin", tmp_path / "one.bin")
    assert (tmp_path / "one.bin").read_bytes() == data
    assert proxy.injected[fault] == 5

    source = tmp_path / "src.bin"
    source.write_bytes(data)
    proxy.plan(fault)
    store.put_file("a/two.bin", source)
    assert raw_get(s3_client, s3_bucket, "a/two.bin") == data

    proxy.plan(fault)
    store.delete("a/two.bin")
    assert proxy.injected == {fault: 7}
    assert [i.key for i in store.list("a/")] == ["a/one.bin"]


def test_multipart_upload_and_download_survive_faults_on_parts(
    proxy: FaultProxy, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """12 MiB in 5 MiB parts: faults on part uploads and ranged part downloads are retried,
    and the object is whole (no part twice, none missing)."""
    store = proxied_store(proxy, s3_bucket, multipart_threshold=5 * MiB, read_timeout=2.0)
    source = tmp_path / "scan.nii.gz"
    source.write_bytes(os.urandom(12 * MiB))

    parts = "uploadId="
    proxy.plan("reset", "http_500", "http_503", match=lambda m, p: m == "PUT" and parts in p)
    store.put_file("big/scan.nii.gz", source)
    assert proxy.total_injected == 3
    assert raw_get(s3_client, s3_bucket, "big/scan.nii.gz") == source.read_bytes()
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")

    proxy.plan("reset", "stall", "http_500", match=lambda m, p: m == "GET")
    store.download("big/scan.nii.gz", tmp_path / "back.nii.gz")
    assert proxy.total_injected == 6
    assert (tmp_path / "back.nii.gz").read_bytes() == source.read_bytes()


def test_mixed_intermittent_faults_on_many_operations(
    proxy: FaultProxy, s3_bucket: str, s3_client: Any
) -> None:
    store = proxied_store(proxy, s3_bucket)
    proxy.every(4, ["reset", "http_500", "stall", "http_503"])
    written = {f"many/{n:03d}.bin": os.urandom(1000 + n) for n in range(12)}
    for key, data in written.items():
        store.put_bytes(key, data)
    assert {i.key: i.size for i in store.list("many/")} == {k: len(v) for k, v in written.items()}
    assert all(store.get_bytes(key) == data for key, data in written.items())
    assert set(proxy.injected) == set(FAULTS) and proxy.total_injected >= 6
    proxy.clear()
    assert len(s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="lake/many/")["Contents"]) == 12


# -------------------------------------------------------------------------- retries run out


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http_500", "InternalError (HTTP 500), after 3 attempt(s)"),
        ("http_503", "SlowDown (HTTP 503), after 3 attempt(s)"),
        ("reset", "ConnectionClosedError, after up to 3 attempts"),
        ("stall", "ReadTimeoutError, after up to 3 attempts"),
    ],
)
def test_exhausted_retries_give_one_clear_phi_free_line(
    proxy: FaultProxy, s3_bucket: str, fault: str, reason: str
) -> None:
    from radflow.keys import sha256_bytes

    store = proxied_store(proxy, s3_bucket, max_attempts=3)
    key = "inbox/Doe^Jane-MRN1234/IM0001.dcm"  # folder names can hold PHI
    proxy.plan(*[fault] * 3)
    with pytest.raises(StoreError) as caught:
        store.put_bytes(key, b"x")
    message = str(caught.value)
    assert proxy.injected[fault] == 3
    assert message == (
        f"S3 put failed for object sha256:{sha256_bytes(f'lake/{key}'.encode())[:12]}"
        f" in bucket {s3_bucket}: {reason}"
    )
    assert "\n" not in message and "Doe" not in message and "MRN" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "RADFLOW_S3_MAX_ATTEMPTS" in caught.value.hint
