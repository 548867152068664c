"""A command's own temporary server: no stage tags unless they are asked for, no heartbeats."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.stack

SCRIPT = """
import os
from flows.runtime import server
proc = server.start_in_background()
print(proc is not None, os.environ.get("RADFLOW_STAGE_TAGS"))
from tasks.runtime import task
print(sorted(task(tags=["stage:x", "gpu"])(lambda: None).tags))
if proc is not None:
    server._stop(proc)
"""


def _run(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, "PREFECT_HOME": env.pop("home"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ["True false", "['gpu']"]),
        ({"RADFLOW_STAGE_TAGS": "true"}, ["True true", "['gpu', 'stage:x']"]),
        ({"PREFECT_API_URL": "http://127.0.0.1:9/api"}, ["False None", "['gpu', 'stage:x']"]),
    ],
)
def test_stage_tags_only_where_a_ui_shows_them(
    tmp_path: object, env: dict[str, str], expected: list[str]
) -> None:
    assert _run(home=str(tmp_path), **env) == expected


HEARTBEATS = """
from flows.runtime import foreground
proc = foreground.start()
from prefect import flow
from prefect.settings import get_current_settings
@flow
def interval() -> int | None:
    return get_current_settings().flows.heartbeat_frequency
print(get_current_settings().flows.heartbeat_frequency)
foreground.ready(proc)
print(interval())
"""


def test_flow_runs_on_the_temporary_server_send_no_heartbeats() -> None:
    """Its flow runs ended up to 1 s late, waiting for the heartbeat thread's sleep, for
    a server that dies with the process. Before `ready`, Prefect's default (180 s)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    done = subprocess.run(
        [sys.executable, "-c", HEARTBEATS],
        # The session's Prefect home: its database already made by an earlier server (in a
        # new one, the migrations take 15-30 s here)
        env={**clean, "PREFECT_HOME": os.environ["PREFECT_HOME"]},
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    assert done.stdout.splitlines() == ["180", "None"]
