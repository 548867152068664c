"""Reliability: S3 faults (through a fault-injecting proxy), killed workers, server restarts.

The proxy (`faultproxy.py`) sits between boto3 and moto's server on loopback and breaks
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
from faultproxy import FAULTS, FaultProxy

from radflow.store import LocalStore, S3Store, StoreError

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
# client down (it is throttling): those two take 6-12 s, so they run with the slow tests.
SLOW = {"stall", "http_503"}


@pytest.mark.parametrize(
    "fault", [pytest.param(f, marks=[pytest.mark.slow] if f in SLOW else []) for f in FAULTS]
)
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


def test_settings_reach_the_client(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from radflow.config import load_settings
    from radflow.store import open_store

    monkeypatch.setenv("RADFLOW_S3_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("RADFLOW_S3_CONNECT_TIMEOUT", "1.5")
    monkeypatch.setenv("RADFLOW_S3_READ_TIMEOUT", "7")
    store = open_store(
        "s3://some-bucket/lake", load_settings(s3_endpoint_url=moto_server).s3_options()
    )
    assert isinstance(store, S3Store)
    config = store.client.meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (1.5, 7.0)
    monkeypatch.setenv("RADFLOW_S3_MAX_ATTEMPTS", "0")
    with pytest.raises(Exception, match="RADFLOW_S3_MAX_ATTEMPTS"):
        load_settings()


# ---------------------------------------------------------------- a real ingest through faults

SMALL = {"rows": 40, "columns": 40, "slices": 16}


def lake_objects(s3_client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {
        k[len(prefix) :]: s3_client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys
    }


@pytest.mark.slow
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
    from tasks import _common

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


# ------------------------------------------------------------------- a worker killed mid-ingest


def _cli_env(pipeline_env: Path, lake: Path, cache: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the session's server: no start-up
        "RADFLOW_STORE_URL": lake.as_uri(),
        "RADFLOW_CACHE_DIR": str(pipeline_env / cache),
        "RADFLOW_DEID__REID_DIR": str(pipeline_env / f"reid-{cache}"),
    }


def _ingest_cli(env: dict[str, str], inbox: Path, labels: Path) -> Any:
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "radflow.cli", "ingest", str(inbox), "--labels", str(labels)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _files(root: Path) -> dict[str, tuple[int, bytes]]:
    """The lake's objects as readers see them: a write the kill cut short may leave a file
    under `.radflow-tmp/`, which no listing or key can reach."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != ".radflow-tmp"
    }


def _outputs(root: Path, stage: str, manifest: str | None) -> list[Path]:
    """The complete outputs of a stage: folders with their manifest, or single objects."""
    base = root / stage
    if not base.exists():
        return []
    if manifest is None:
        return sorted(p for p in base.rglob("*") if p.is_file())
    return sorted(p.parent for p in base.rglob(manifest))


@pytest.mark.slow
def test_killed_ingest_reruns_to_the_same_lake(prefect_server: None, pipeline_env: Path) -> None:
    """SIGKILL the `radflow ingest` process once some studies are done, run it again: no
    half-written or duplicated output, the finished ones untouched, and the lake equal to one
    uninterrupted run's (same secret, another lake)."""
    import signal
    import time

    from radflow.synth import SynthSpec, synthesize

    n = 5
    inbox, labels = pipeline_env / "inbox", pipeline_env / "labels.csv"
    synthesize(inbox, labels, SynthSpec(studies=n, **SMALL, seed=11))
    lake = pipeline_env / "lake"
    env = _cli_env(pipeline_env, lake, "cache")

    first = _ingest_cli(env, inbox, labels)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if len(_outputs(lake, "volumes", "qc.json")) >= 1:
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, first.stdout.read() if first.stdout else ""
    done_volumes = _outputs(lake, "volumes", "qc.json")
    assert 1 <= len(done_volumes) < n  # killed in the middle, not before or after
    before = _files(lake)
    finished = {
        k: v
        for k, v in before.items()
        if any((lake / k).is_relative_to(d) for d in _outputs(lake, "deid", "study.json"))
        or any((lake / k).is_relative_to(d) for d in done_volumes)
    }
    assert finished

    second = _ingest_cli(env, inbox, labels)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert f"ingested {n} studies" in out
    after = _files(lake)
    assert {k: after[k] for k in finished} == finished  # reused, not rewritten

    # No half-written objects, no duplicates: each stage holds one whole output per study.
    assert not [k for k in after if ".radflow-tmp" in k or k.endswith(".part")]
    assert sorted(after) == sorted(i.key for i in LocalStore(lake).list())
    for stage, manifest in (("deid", "study.json"), ("volumes", "qc.json")):
        whole = _outputs(lake, stage, manifest)
        assert len(whole) == n
        for path in (lake / stage).rglob("*"):
            assert path.is_dir() or any(path.is_relative_to(w) for w in whole), path
    assert len(_outputs(lake, "features", None)) == n
    assert len(_outputs(lake, "catalog", None)) == n

    clean_lake = pipeline_env / "clean-lake"
    clean = _ingest_cli(_cli_env(pipeline_env, clean_lake, "cache-clean"), inbox, labels)
    out, _ = clean.communicate(timeout=300)
    assert clean.returncode == 0, out
    reference = _files(clean_lake)
    assert sorted(after) == sorted(reference)
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in reference.items()}


# ----------------------------------------------------------- the Prefect server restarted mid-flow


@pytest.mark.slow
def test_prefect_server_restart_mid_ingest_loses_no_study(pipeline_env: Path) -> None:
    """`prefect server start` (own PREFECT_HOME, SQLite) is SIGKILLed while an ingest runs
    against it and restarted on the same port and database ~10 s later. Observed: the flow
    process keeps computing (task states travel as events, the client retries), waits for the
    API, then finishes Completed; every study is prepared and a re-run is all cached."""
    import json
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import _free_port

    from radflow.synth import SynthSpec, synthesize

    n = 4
    inbox, labels = pipeline_env / "inbox", pipeline_env / "labels.csv"
    synthesize(inbox, labels, SynthSpec(studies=n, **SMALL, seed=5))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = {
        **os.environ,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(pipeline_env / "prefect"),
    }

    def start() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "prefect", "server", "start"]
        return subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_healthy() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{api}/health", timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        pytest.fail("the Prefect server did not come up")

    env = {
        **_cli_env(pipeline_env, pipeline_env / "lake", "cache"),
        **server_env,
        "PREFECT_API_URL": api,
    }
    server = start()
    try:
        wait_healthy()
        flow = _ingest_cli(env, inbox, labels)
        while not list((pipeline_env / "lake").glob("deid/*/*/study.json")):
            assert flow.poll() is None, flow.stdout.read() if flow.stdout else ""
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        time.sleep(3)
        assert flow.poll() is None  # the flow outlives its server
        server = start()
        wait_healthy()
        out, _ = flow.communicate(timeout=240)
        assert flow.returncode == 0, out
        assert f"ingested {n} studies" in out
        assert len(_outputs(pipeline_env / "lake", "features", None)) == n
        request = urllib.request.Request(
            f"{api}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as answer:
            runs = json.load(answer)
        assert [r["state_type"] for r in runs] == ["COMPLETED"]

        again = _ingest_cli(env, inbox, labels)
        out, _ = again.communicate(timeout=240)
        assert again.returncode == 0 and f"ingested {n} studies" in out, out
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
