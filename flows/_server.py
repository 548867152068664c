"""Start Prefect's temporary local server while the rest of radflow is still importing.

With no PREFECT_API_URL, Prefect starts a temporary server in a subprocess on first use
(about 7 s here with a database, 20+ s without). Starting it from a thread at the very
beginning overlaps that wait with the imports of the scientific stack; `wait()` joins the
thread before any flow runs, so only that thread ever calls `start()`.
"""

from __future__ import annotations

import os
import threading


def start_in_background() -> threading.Thread | None:
    if os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.server.api.server import SubprocessASGIServer

    thread = threading.Thread(target=SubprocessASGIServer().start, name="prefect-server-start")
    thread.start()
    return thread


def wait(thread: threading.Thread | None) -> None:
    if thread is not None:
        thread.join()
