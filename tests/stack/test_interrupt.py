"""Ctrl-C on `radflow ingest`: the terminal's SIGINT to the whole process group (the CLI and
the temporary Prefect server it started) stops the run within seconds, with one line and
exit code 130, leaving nothing behind it; running the same command again finishes the
delivery to the same lake as a run never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROI_SOURCES_WITH_RULE

from radflow.store import LocalStore
from radflow.synth import SynthSpec, synthesize

pytestmark = pytest.mark.stack

INTERRUPTED = "interrupted; run the same command again to resume"
REPO = Path(__file__).resolve().parents[2]
STUDIES = 6


def _env(work: Path, lake: Path, secret: Path, name: str) -> dict[str, str]:
    """As a user's shell: no Prefect server configured, so the CLI starts its temporary one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    tmp = work / f"tmp-{name}"  # where the stages' scratch folders go
    tmp.mkdir(exist_ok=True)
    return {
        **env,
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(work / f"prefect-{name}"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RADFLOW_STORE_URL": lake.as_uri(),
        "RADFLOW_CACHE_DIR": str(work / f"cache-{name}"),
        "RADFLOW_DEID__REID_DIR": str(work / f"reid-{name}"),
        "RADFLOW_SECRET_FILE": str(secret),
        "RADFLOW_PREPROCESS__ROI_SOURCES": ROI_SOURCES_WITH_RULE,
        "RADFLOW_STAGE_TAGS": "false",
        "TMPDIR": str(tmp),
    }


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _ingest(env: dict[str, str], inbox: Path, labels: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "radflow.cli", "ingest", str(inbox), "--labels", str(labels)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # and Ctrl-C's default meaning, as there: a test run started in the background (`make
        # test &`) ignores SIGINT, and a child inherits that, so Python would not even raise
        # KeyboardInterrupt before radflow takes SIGINT over.
        preexec_fn=_default_sigint,
    )


def _lake_bytes(root: Path) -> dict[str, bytes]:
    """Every object a reader can reach (a cut-short write may leave a file under
    `.radflow-tmp/`, which no key reaches)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != ".radflow-tmp"
    }


def _group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _scratch_gone(tmp: Path, timeout_s: float) -> bool:
    """The stages' scratch folders: removed by the Ctrl-C handler, and once more a second
    after the exit (a task thread may have recreated one; radflow/scratch.py)."""
    deadline = time.monotonic() + timeout_s
    while list(tmp.glob("radflow-*")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_ctrl_c_stops_ingest_at_once_and_a_rerun_resumes(tmp_path: Path) -> None:
    inbox, labels = tmp_path / "inbox", tmp_path / "labels.csv"
    synthesize(inbox, labels, SynthSpec(studies=STUDIES, rows=40, columns=40, slices=16, seed=11))
    secret = tmp_path / "secret.key"
    secret.write_text("interrupt-test-secret-" + "0123456789abcdef" * 2)
    secret.chmod(0o600)
    lake = tmp_path / "lake"
    env = _env(tmp_path, lake, secret, "main")

    first = _ingest(env, inbox, labels)
    deadline = time.monotonic() + 240
    while first.poll() is None and time.monotonic() < deadline:
        if any((lake / "deid").rglob("study.json")):  # the first study is being processed
            break
        time.sleep(0.02)
    assert first.poll() is None, first.communicate()
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    sent = time.monotonic()
    out, err = first.communicate(timeout=60)
    stopped_after = time.monotonic() - sent

    assert first.returncode == 130, err[-3000:]
    assert stopped_after < 15
    assert err.splitlines().count(INTERRUPTED) == 1, err[-3000:]
    assert err.rstrip().endswith(INTERRUPTED)  # nothing after it
    assert "Traceback" not in out + err and "Error logging to API" not in err
    assert _group_gone(first.pid, 10)  # the temporary server went with it
    assert _scratch_gone(Path(env["TMPDIR"]), 10)  # no study's series left in /tmp
    assert len(list((lake / "catalog").glob("*.json"))) < STUDIES  # stopped mid-way

    again = _ingest(env, inbox, labels)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert f"ingested {STUDIES} studies" in out
    resumed = _lake_bytes(lake)
    assert sorted(resumed) == sorted(o.key for o in LocalStore(lake).list())

    clean_lake = tmp_path / "clean-lake"
    clean = _ingest(_env(tmp_path, clean_lake, secret, "clean"), inbox, labels)
    out, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err[-3000:]
    assert resumed == _lake_bytes(clean_lake)


def test_ctrl_c_marks_the_run_cancelled_on_a_server_that_stays_up(
    prefect_server: None, tmp_path: Path
) -> None:
    """With a server of its own (`radflow serve`, here the session's), Ctrl-C reaches the CLI
    alone; the flow run it leaves is Cancelled in the UI, not Running forever."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.settings import PREFECT_API_URL

    from radflow.keys import short_id

    inbox, labels = tmp_path / "inbox", tmp_path / "labels.csv"
    synthesize(inbox, labels, SynthSpec(studies=4, rows=40, columns=40, slices=16, seed=12))
    secret = tmp_path / "secret.key"
    secret.write_text("interrupt-test-secret-" + "0123456789abcdef" * 2)
    secret.chmod(0o600)
    lake = tmp_path / "lake"
    env = {
        **_env(tmp_path, lake, secret, "served"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }

    run = _ingest(env, inbox, labels)
    deadline = time.monotonic() + 240
    while run.poll() is None and time.monotonic() < deadline:
        if any((lake / "deid").rglob("study.json")):
            break
        time.sleep(0.02)
    assert run.poll() is None, run.communicate()
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err[-3000:]
    assert err.rstrip().endswith(INTERRUPTED) and "Traceback" not in err

    name = f"ingest-{short_id(inbox.resolve().as_uri() + '/')}"
    with get_client(sync_client=True) as client:
        [flow_run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    assert flow_run.state is not None and flow_run.state.is_cancelled(), flow_run.state


def _wait_for_a_child(pid: int, timeout_s: float) -> None:
    """Until `pid` has started a process: a flow command's first act is to spawn Prefect's
    temporary server, so from then on the command's own code is running. (A fixed delay from
    the start could land, on a busy machine, while Python still imports radflow's first
    modules, before any program can take Ctrl-C over.)"""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if children.exists() and children.read_text().split():
            return
        time.sleep(0.01)
    raise AssertionError(f"no child process after {timeout_s} s")


@pytest.mark.parametrize("delay_s", [0.0, 1.0, 2.5])
def test_ctrl_c_while_the_server_starts_and_prefect_imports(tmp_path: Path, delay_s: float) -> None:
    """Before the flow runs (preflight, server start-up, Prefect half imported), `delay_s` after
    the server's spawn: the same one line and 130, and no server left behind."""
    inbox, labels = tmp_path / "inbox", tmp_path / "labels.csv"
    synthesize(inbox, labels, SynthSpec(studies=1, rows=16, columns=16, slices=8, seed=13))
    secret = tmp_path / "secret.key"
    secret.write_text("interrupt-test-secret-" + "0123456789abcdef" * 2)
    secret.chmod(0o600)
    run = _ingest(_env(tmp_path, tmp_path / "lake", secret, "early"), inbox, labels)
    _wait_for_a_child(run.pid, 60)
    time.sleep(delay_s)
    assert run.poll() is None, run.communicate()
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 130, err[-3000:]
    assert err.splitlines()[-1] == INTERRUPTED and "Traceback" not in err
    assert _group_gone(run.pid, 10)
