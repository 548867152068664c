"""A flow run from a terminal: its temporary server, Ctrl-C, and what its console shows.

Ctrl-C. Without help, the terminal's SIGINT reaches the temporary server too (same process
group), which stops at once, while the flow's task threads go on and Prefect's log handler
retries the dead API for minutes. Here the first SIGINT ends the run at once: the flow run
is marked Cancelled where its API still answers (a `radflow serve` server), the temporary
server is stopped, and the process exits with 130 without waiting for task threads. Nothing
is half-written: every lake and cache write goes to a temporary name and is renamed into
place (the guarantee tests/stack/test_faults.py checks with SIGKILL), so a rerun resumes.

Console. A user's mistake raised inside a flow (a `RadflowError` that is not a quarantine)
is printed by the CLI as one line and a hint. Prefect logs it before that with tracebacks
(task failed, flow failed, their final states); a `logging.Filter` on Prefect's console
handler (`PrefectConsoleHandler`, on the root logger in Prefect's logging.yml) drops those
records from the terminal only. Its API handler is a separate handler, so the UI keeps them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType

from flows.runtime import server as temporary_server
from radflow import scratch
from radflow.errors import QuarantineError, RadflowError

INTERRUPTED = "interrupted; run the same command again to resume"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
CANCEL_TIMEOUT_S = 2.0


def start() -> subprocess.Popen[bytes] | None:
    """Spawn the temporary server (when no PREFECT_API_URL is set) and take over SIGINT;
    call `ready` once the flow modules are imported."""
    proc = temporary_server.start_in_background()
    signal.signal(signal.SIGINT, _on_interrupt(proc))
    return proc


def ready(proc: subprocess.Popen[bytes] | None) -> None:
    """Wait for the server, and keep a user's mistake to one line on the console."""
    temporary_server.wait(proc)
    if proc is not None:
        _no_heartbeats()
    quiet_user_errors()


def _no_heartbeats() -> None:
    """No flow-run heartbeats for the rest of this process. They let a server mark a run
    crashed when its process dies; the temporary server dies with this process, so they tell
    nobody anything, and each flow run's end waited up to 1 s for the heartbeat thread (Prefect
    3.8 checks its stop event between one-second sleeps). `radflow serve`'s workers keep them."""
    from prefect.context import SettingsContext, get_settings_context

    current = get_settings_context()
    settings = current.settings.copy_with_update(updates={"flows.heartbeat_frequency": None})
    # Entered and never left: the context variable holds it for the rest of the process.
    SettingsContext(profile=current.profile, settings=settings).__enter__()


def _on_interrupt(
    proc: subprocess.Popen[bytes] | None,
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C changes nothing
        # The task threads' last lines go to the UI only: no new record, and the console
        # handlers' locks held (a line being written finishes first) until the exit.
        logging.disable(logging.CRITICAL)
        for console in logging.getLogger().handlers:
            if console.lock is not None:
                console.lock.acquire(timeout=1.0)
        os.write(2, f"{INTERRUPTED}\n".encode())  # stderr, whatever wraps sys.stderr
        # The last line: Prefect's API log worker, whose server stops below, would print
        # "--- Error logging to API ---" from its own thread (it checks raiseExceptions).
        logging.raiseExceptions = False
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
        with contextlib.suppress(Exception):  # e.g. Prefect half imported: exit anyway
            _cancel_current_flow_run()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        # Not sys.exit: that would wait for the task threads (ThreadPoolExecutor joins them),
        # so no `finally` runs: the stages' scratch folders are removed here.
        scratch.close()
        os._exit(EXIT_INTERRUPTED)

    return handler


def _cancel_current_flow_run() -> None:
    """Mark the running flow run Cancelled, for the UI; bounded, as its API may be gone."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()  # the handler runs in the main thread, in the flow's context
    if context is None or context.flow_run is None:
        return
    run_id = context.flow_run.id

    def cancel() -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled

        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(
                    run_id, Cancelled(message="interrupted (Ctrl-C)"), force=True
                )
        except Exception:  # the temporary server stops on the same Ctrl-C: nothing to tell
            pass

    worker = threading.Thread(target=cancel, daemon=True)
    worker.start()
    worker.join(CANCEL_TIMEOUT_S)


def is_user_mistake(exc: BaseException | None) -> bool:
    return isinstance(exc, RadflowError) and not isinstance(exc, QuarantineError)


class UserMistakes(logging.Filter):
    """Drops Prefect's records of a user's mistake: those carrying it (task and flow
    failures with tracebacks) and the final-state lines that quote it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None and record.args:
            exc = next((a for a in _as_tuple(record.args) if isinstance(a, BaseException)), None)
        if is_user_mistake(exc):
            if str(exc):
                self.seen.add(str(exc))
            return False
        if self.seen:
            message = record.getMessage()
            return not any(quoted in message for quoted in self.seen)
        return True


def _as_tuple(args: object) -> tuple[object, ...]:
    return args if isinstance(args, tuple) else (args,)


def quiet_user_errors() -> None:
    """Add `UserMistakes` to Prefect's console handlers (once)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, UserMistakes) for f in handler.filters
        ):
            handler.addFilter(UserMistakes())
