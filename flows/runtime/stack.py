"""`radflow serve` / `radflow stop`: a Prefect server on loopback, the `cpu` and `gpu` work
pools, the GPU concurrency limit, the deployments of infra/prefect.yaml, and a process worker
per pool, all started as child processes whose PIDs are kept in `<home>/stack.json`.

Prefect's own CLI does each step (it is the documented interface); this module only orders
them, waits for the server to be healthy, and remembers what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.runtime import prefect_db
from radflow.errors import RadflowError

ROOT = Path(__file__).resolve().parents[2]
POOLS = ("cpu", "gpu")
ARRIVAL_QUEUE = "arrival"


@dataclass(frozen=True)
class Stack:
    api_url: str
    ui_url: str
    pids: dict[str, int]
    home: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefect(*commands: tuple[str, ...], env: dict[str, str]) -> None:
    """Run `prefect` commands side by side: each is a process paying Prefect's import (seconds)
    for one round trip, so commands that do not depend on each other should not queue."""
    running = [
        (
            args,
            subprocess.Popen(
                [sys.executable, "-m", "prefect", "--no-prompt", *args],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for args in commands
    ]
    failed = []
    for args, process in running:
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        if process.returncode != 0:
            failed.append(f"`prefect {' '.join(args[:3])}` failed: {out[-300:]} {err[-300:]}")
    if failed:
        raise RadflowError("; ".join(failed))


def _healthy(api_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RadflowError(f"the Prefect server at {api_url} did not become healthy in {timeout} s")


def start(
    home: Path,
    port: int | None = None,
    database_url: str | None = None,
    gpus: int = 1,
    env: dict[str, str] | None = None,
) -> Stack:
    """Start everything; `database_url` (for example postgresql+asyncpg://…) instead of SQLite.
    `env` is the environment the workers (and so the flow runs) get."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    base = dict(env if env is not None else os.environ)
    base |= {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": api_url,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "RADFLOW_CHECKOUT": str(ROOT),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH")) if p),
    }
    server_env = dict(base)
    server_env.pop("PREFECT_API_URL")
    # The UI asks the API at this address (by default it would assume port 4200).
    server_env["PREFECT_UI_API_URL"] = api_url
    if database_url:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    database, template = prefect_db.default_database(server_env), prefect_db.template(server_env)
    if database is not None and template is not None:
        prefect_db.seed(database, template)  # a new SQLite home from the temporary servers'
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    pids: dict[str, int] = {}

    def spawn(name: str, args: list[str], process_env: dict[str, str]) -> None:
        pids[name] = _spawn([sys.executable, "-m", *args], process_env, logs / f"{name}.log")

    spawn(
        "server",
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_env,
    )
    stack = Stack(api_url, api_url.removesuffix("/api"), pids, str(home))
    (home / "stack.json").write_text(json.dumps(asdict(stack), indent=1))
    try:
        _healthy(api_url, timeout=120)
        _prefect(
            *[("work-pool", "create", pool, "--type", "process", "--overwrite") for pool in POOLS],
            ("concurrency-limit", "create", "gpu", str(gpus)),
            env=base,
        )
        _prefect(("work-queue", "create", ARRIVAL_QUEUE, "--pool", "cpu"), env=base)
        # The workers import while the deployments are made: until then they find no runs.
        for pool in POOLS:
            worker = ["prefect", "worker", "start", "--pool", pool, "--work-queue", "default"]
            spawn(f"worker-{pool}", worker, base)
        # Scoring on arrival is latency-bound: its queue has a worker that stays imported.
        warm = ["flows.runtime.warm_worker", "--pool", "cpu", "--queue", ARRIVAL_QUEUE]
        spawn("worker-cpu-warm", warm, base | {"PREFECT_WORKER_QUERY_SECONDS": "0.5"})
        _prefect(("deploy", "--all", "--prefect-file", "infra/prefect.yaml"), env=base)
    except BaseException:
        stop(home)
        raise
    (home / "stack.json").write_text(json.dumps(asdict(stack), indent=1))
    return stack


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> int:
    """A child in a session of its own (`stop` ends the whole group, flow runs included),
    able to take SIGINT: a `prefect worker` stops on SIGTERM by sending itself SIGINT, and
    children inherit an ignored SIGINT (`radflow serve &` in a script: a shell starts its
    background commands so): those workers ran on until `stop`'s SIGKILL, 20 s later.
    Python resets a handled signal to its default in a new program, never an ignored one."""
    with open(log_path, "ab") as log, _sigint_handled():
        child = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return child.pid


@contextlib.contextmanager
def _sigint_handled() -> Iterator[None]:
    """SIGINT handled here (so not ignored in a child) while the child starts, where it was
    ignored; only the main thread may change it, elsewhere it is left as it is."""
    if (
        signal.getsignal(signal.SIGINT) != signal.SIG_IGN
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop(home: Path) -> list[str]:
    """End what `start` started (by process group); the names of what was running."""
    record = home.resolve() / "stack.json"
    if not record.exists():
        return []
    pids: dict[str, int] = json.loads(record.read_text())["pids"]
    stopped: list[str] = []
    # The workers first, the server once they are gone: a worker stopping while its server is
    # already down retries its last requests to it (7-20 s here, against 0.4 s).
    for group in ([n for n in pids if n != "server"], [n for n in pids if n == "server"]):
        stopped += _end([(name, pids[name]) for name in sorted(group)], wait=20)
    record.unlink()
    return stopped


def _end(groups: list[tuple[str, int]], wait: float) -> list[str]:
    """SIGTERM each process group, SIGKILL what still runs `wait` s later; the names that ran."""
    ended = []
    for name, pid in groups:
        try:
            os.killpg(pid, signal.SIGTERM)
            ended.append(name)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + wait
    for _, pid in groups:
        while time.monotonic() < deadline:
            if not _group_running(pid):
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    return ended


def _group_running(pgid: int) -> bool:
    """Whether a process of the group still runs. A member that has exited but was not reaped
    yet (a zombie: its parent, the process that started the stack, has not waited for it)
    still answers `killpg(pgid, 0)`, so on Linux the group's members are read from /proc."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False
