"""Reliability: a `radflow ingest` process killed mid-ingest, and the Prefect server it reports to
killed and restarted mid-ingest; no study lost, nothing half-written or duplicated."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from radflow.store import LocalStore

pytestmark = pytest.mark.stack

SMALL = {"rows": 40, "columns": 40, "slices": 16}


# ------------------------------------------------------------------- a worker killed mid-ingest


def _cli_env(pipeline_env: Path, lake: Path, cache: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
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
