"""`radflow stop`: what `radflow serve` started ends, the workers before their server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flows.runtime import stack as runtime_stack

# A stand-in worker: on SIGTERM it looks, half a second later (as a stopping worker's last
# requests do), whether its server still runs, writes what it saw and exits.
WORKER = """
import signal, sys, time
server, seen = int(sys.argv[1]), sys.argv[2]
def stop(*_):
    time.sleep(0.5)
    try:  # a server ended but not yet reaped by its parent is a zombie: "Z"
        state = open(f"/proc/{server}/stat").read().rsplit(")", 1)[1].split()[0]
        alive = "server gone" if state == "Z" else "server up"
    except FileNotFoundError:
        alive = "server gone"
    open(seen, "w").write(alive)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", *args], start_new_session=True, stdout=subprocess.PIPE, text=True
    )


def test_stop_ends_every_group_the_workers_before_their_server(tmp_path: Path) -> None:
    server = _spawn("import time\nwhile True: time.sleep(1)")
    workers = {
        f"worker-{name}": _spawn(WORKER, str(server.pid), str(tmp_path / name))
        for name in ("cpu", "gpu")
    }
    for worker in workers.values():
        assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
    pids = {"server": server.pid} | {name: w.pid for name, w in workers.items()}
    (tmp_path / "stack.json").write_text(json.dumps({"pids": pids}))

    stopped = runtime_stack.stop(tmp_path)

    assert stopped == ["worker-cpu", "worker-gpu", "server"]
    for process in (server, *workers.values()):
        assert process.wait(timeout=5) is not None  # ended, none left to the SIGKILL
    assert server.returncode == -15  # SIGTERM
    assert [(tmp_path / n).read_text() for n in ("cpu", "gpu")] == ["server up", "server up"]
    assert not (tmp_path / "stack.json").exists()
    assert runtime_stack.stop(tmp_path) == []  # nothing left to stop


def test_a_group_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    stubborn = _spawn(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\nwhile True: time.sleep(1)"
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
    started = time.monotonic()
    assert runtime_stack._end([("worker-cpu", stubborn.pid)], wait=0.5) == ["worker-cpu"]
    assert stubborn.wait(timeout=5) == -9  # SIGKILL, after the wait
    assert time.monotonic() - started >= 0.5


# A stand-in `prefect worker`: it stops on SIGTERM by sending itself SIGINT (Prefect 3.8's
# `setup_signal_handlers_worker`), keeping the SIGINT handling it started with.
PREFECT_LIKE_WORKER = """
import os, signal, time
signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
try:
    print("ready", flush=True)
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    print("stopped by its SIGINT", flush=True)
"""


def test_workers_started_with_sigint_ignored_still_stop_on_sigterm(tmp_path: Path) -> None:
    """`radflow serve &` in a script starts with SIGINT ignored, and its children would inherit
    that: a worker then ignored the SIGINT its SIGTERM handler sends, until the SIGKILL."""
    log = tmp_path / "worker-cpu.log"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pid = runtime_stack._spawn(
            [sys.executable, "-c", PREFECT_LIKE_WORKER], dict(os.environ), log
        )
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # this process: as it was
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 30
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "stack.json").write_text(json.dumps({"pids": {"worker-cpu": pid}}))

    assert runtime_stack.stop(tmp_path) == ["worker-cpu"]

    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0  # not SIGKILLed
    assert log.read_text() == "ready\nstopped by its SIGINT\n"
