"""Start Prefect's temporary local server before the rest of radflow imports.

With no PREFECT_API_URL, Prefect starts a temporary server in a subprocess on first use,
after the client process has imported the server's own modules (about 4 s here) and then
waits for it to boot (about 7 s). Starting the same subprocess ourselves at the very
beginning lets it boot while the scientific stack imports, and the client never imports the
server. The command and environment are the ones Prefect 3.8 uses for its temporary server.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from flows.runtime import prefect_db

# `PREFECT__SERVER_EPHEMERAL` and `PREFECT__SERVER_FINAL` are private (double underscore, no
# Prefect setting behind them): `create_app` reads them in prefect/server/api/server.py (3.8.8,
# lines 883-885) and `SubprocessASGIServer._run_uvicorn_command` sets them (lines 1179-1184).
# EPHEMERAL runs only the services a temporary server needs (no scheduler, no UI); FINAL lets
# the app drop its copied routes. Prefect 3.8 has no public equivalent: its own helper,
# `SubprocessASGIServer`, imports the server into this process and blocks until it is
# healthy, which is what this module exists to avoid; `prefect server start` runs every service (the
# scheduler too) or, with --no-services, not the task-run recorder and event persister that
# the runs need. Check these two names on every Prefect upgrade.
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}


# This process's server's Prefect home, as `prefect_db.prepare` left it for the server's
# first answer, or for a stop before it (a command refused by the preflight leaves no new
# Prefect home behind).
_prepared: prefect_db.Prepared | None = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_in_background() -> subprocess.Popen[bytes] | None:
    """Spawn the server and point this process's Prefect client at it; None when an API is set
    (in the environment, or in settings when Prefect is already imported: a test harness)."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    if "prefect.settings" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            return None
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        return None
    global _prepared
    _prepared = prefect_db.prepare(os.environ)
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(Path(spec.origin).parent.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        env={**os.environ, **_SERVER_ENV, **_prepared.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    # No stage tags on this server unless asked for: it has no UI to filter by them, and on its
    # SQLite database each tagged task run's concurrency check (an UPDATE even where no limit
    # exists) collides with the run's other writes, "database is locked", which the client
    # answers by retrying after about 2 s (measured: 4-6 such waits in a warm 2-study ingest).
    os.environ.setdefault("RADFLOW_STAGE_TAGS", "false")
    atexit.register(_stop, proc)
    return proc


def wait(proc: subprocess.Popen[bytes] | None, timeout_s: float = 120.0) -> None:
    """Block until the server answers its health check (or fail with its exit code)."""
    if proc is None:
        return
    url = os.environ["PREFECT_API_URL"] + "/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Prefect's temporary server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    if _prepared is not None:
                        _prepared.answered()
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Prefect's temporary server did not start within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if _prepared is not None:
        _prepared.stopped_early()
