"""A user's mistake that only a flow can find (here: a Prefect Secret block that does not
exist, read inside the first task) reaches the terminal as the CLI's one line and hint, with
no Prefect traceback; the flow run's logs in the API (what the UI shows) keep the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from radflow.keys import short_id
from radflow.synth import SynthSpec, synthesize

pytestmark = pytest.mark.flow

REPO = Path(__file__).resolve().parents[2]
MISTAKE = "setting RADFLOW_SECRET_BLOCK: no readable Prefect Secret block of that name"


def test_a_mistake_inside_a_flow_is_one_line_on_the_console_and_whole_in_the_api(
    prefect_server: None, pipeline_env: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL

    inbox = pipeline_env / "inbox"
    synthesize(inbox, pipeline_env / "labels.csv", SynthSpec(1, 16, 16, 8, seed=5))
    env = {k: v for k, v in os.environ.items() if k != "RADFLOW_SECRET_FILE"}
    env |= {
        "PYTHONPATH": str(REPO),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the session's server
        "RADFLOW_SECRET_BLOCK": "no-such-block",
    }
    done = subprocess.run(
        [sys.executable, "-m", "radflow.cli", "ingest", str(inbox)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "| ERROR" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines.count(f"error: {MISTAKE}") == 1
    assert lines[lines.index(f"error: {MISTAKE}") + 1].startswith("hint: create the Secret block")
    assert done.stderr.count("no readable Prefect Secret block") == 1  # the CLI's line only

    name = f"ingest-{short_id(inbox.resolve().as_uri() + '/')}"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
        assert len(runs) == 1 and runs[0].state is not None and runs[0].state.is_failed()
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id]))
        )
    with_traceback = [log.message for log in logs if "Traceback" in log.message]
    assert any("no readable Prefect Secret block" in m for m in with_traceback), [
        log.message[:200] for log in logs
    ]
