"""Reliability: a real ingest from S3 through a fault-injecting proxy (`support/faultproxy.py`)
between boto3 and moto's server; the lake must equal a fault-free run's, object by object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.faultproxy import FAULTS, FaultProxy

pytestmark = pytest.mark.flow


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server) as p:
        yield p


# ---------------------------------------------------------------- a real ingest through faults

SMALL = {"rows": 40, "columns": 40, "slices": 16}


def lake_objects(s3_client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {
        k[len(prefix) :]: s3_client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys
    }


def test_ingest_from_s3_through_intermittent_faults(
    prefect_server: None,
    pipeline_env: Path,
    proxy: FaultProxy,
    s3_client: Any,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inbox and lake on S3 behind the proxy, every 30th of its ~550 requests broken: the flow
    completes and writes exactly the objects (keys and bytes) a fault-free run writes."""
    from flows.ingest import ingest
    from radflow.synth import SynthSpec, synthesize
    from tasks import runtime as _common

    synthesize(pipeline_env / "in", pipeline_env / "labels.csv", SynthSpec(studies=3, **SMALL))
    for path in (pipeline_env / "in").rglob("*.dcm"):
        s3_client.upload_file(
            str(path), s3_bucket, f"inbox/{path.relative_to(pipeline_env / 'in')}"
        )
    monkeypatch.setenv("RADFLOW_S3_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("RADFLOW_S3_READ_TIMEOUT", "1")

    def run(lake: str) -> list[str]:
        monkeypatch.setenv("RADFLOW_STORE_URL", f"s3://{s3_bucket}/{lake}")
        _common.settings.cache_clear()
        _common.lake.cache_clear()
        keys: list[str] = ingest(f"s3://{s3_bucket}", "inbox/", str(pipeline_env / "labels.csv"))
        return keys

    proxy.every(30, ["reset", "http_500", "stall", "http_503"])
    faulty = run("faulty")
    assert set(proxy.injected) == set(FAULTS), proxy.injected
    injected = proxy.total_injected
    proxy.clear()
    monkeypatch.setenv("RADFLOW_CACHE_DIR", str(pipeline_env / "cache-clean"))
    clean = run("clean")
    assert proxy.total_injected == injected  # the reference run saw no fault

    assert len(faulty) == 3 and faulty == clean
    got = lake_objects(s3_client, s3_bucket, "faulty/")
    want = lake_objects(s3_client, s3_bucket, "clean/")
    assert sorted(got) == sorted(want)
    assert got == want
