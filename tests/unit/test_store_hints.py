"""S3 failures say what to do about them: a missing bucket, missing credentials and an
endpoint that does not answer each get their own hint (real boto3 against moto's server)."""

from __future__ import annotations

import socket

import pytest

from radflow.errors import RadflowError
from radflow.store import S3Store

REGION = "us-east-1"


def test_a_missing_bucket_is_named_as_missing(moto_server: str) -> None:
    store = S3Store("radflow-no-such-bucket", endpoint_url=moto_server, region=REGION)
    with pytest.raises(RadflowError) as caught:
        store.put_bytes("a/b.json", b"{}")
    assert "NoSuchBucket" in str(caught.value)
    assert caught.value.hint.startswith("the bucket does not exist")


def test_missing_credentials_are_named_as_missing(
    moto_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find
    store = S3Store(s3_bucket, endpoint_url=moto_server, region=REGION, max_attempts=1)
    with pytest.raises(RadflowError) as caught:
        store.put_bytes("a/b.json", b"{}")
    assert "NoCredentialsError" in str(caught.value)
    assert "AWS_ACCESS_KEY_ID" in caught.value.hint


def test_an_endpoint_that_does_not_answer_points_at_the_endpoint(moto_server: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    store = S3Store(
        "any-bucket", endpoint_url=f"http://127.0.0.1:{port}", region=REGION, max_attempts=1
    )
    with pytest.raises(RadflowError) as caught:
        store.put_bytes("a/b.json", b"{}")
    assert "RADFLOW_S3_ENDPOINT_URL" in caught.value.hint
