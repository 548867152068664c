"""Scratch folders for one stage call, gone even when the run is cut short.

A stage downloads a study's series, a report its primary series, a segmentation training its
cases into a temporary folder (hundreds of MB for a 512×512×300 CT). `TemporaryDirectory`
removes one on a normal exit, not when the process ends without unwinding: Ctrl-C on a flow
command ends with `os._exit` (flows/runtime/foreground.py, so as not to wait for task threads),
and a killed worker (SIGKILL, the OOM killer) runs nothing. Every Ctrl-C and kill left its
scratch in /tmp. Here the live folders are known, so the Ctrl-C handler removes them, and a
folder whose process is gone is swept by the next radflow process that makes one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# `radflow-<kind>-<pid>-<mkdtemp's 8 characters>`: the pid says whose it is.
_NAME = re.compile(r"radflow-[a-z]+-(\d+)-[a-z0-9_]{8}")
# A folder of a process that is gone here is swept only once it has been left alone this
# long: /tmp may be shared with containers whose processes this one cannot see.
ORPHAN_AGE_S = 3600.0

_live: set[Path] = set()
_lock = threading.Lock()
_swept = False
_closed = False


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A private folder under the system's temporary folder for the block's lifetime."""
    _sweep_once()
    with _lock:
        if _closed:
            raise RuntimeError("radflow is exiting: no new scratch folder")
        path = Path(tempfile.mkdtemp(prefix=f"radflow-{kind}-{os.getpid()}-"))
        _live.add(path)
    try:
        yield path
    finally:
        with _lock:
            _live.discard(path)
        shutil.rmtree(path, ignore_errors=True)


def close() -> None:
    """Before an exit that skips `finally` blocks (`os._exit`): no new scratch folder from
    here on, and this process's folders removed now. A task thread that runs until the exit
    can still recreate the folder it is downloading into (a download makes its parents), so
    a detached `sh` removes the same paths again a second after, when no thread is left."""
    global _closed
    with _lock:
        _closed = True
        live = sorted(_live)
        _live.clear()
    for path in live:
        shutil.rmtree(path, ignore_errors=True)
    if live:
        subprocess.Popen(
            ["sh", "-c", 'sleep 1; exec rm -rf -- "$@"', "sh", *map(str, live)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the process group a terminal's Ctrl-C reaches
        )


def sweep_orphans(root: Path | None = None, min_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Remove the scratch folders of radflow processes that no longer run; returns them."""
    root = Path(tempfile.gettempdir()) if root is None else root
    now = time.time()
    removed: list[Path] = []
    for entry in root.glob("radflow-*"):
        match = _NAME.fullmatch(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue
        if info.st_uid != os.getuid() or now - info.st_mtime < min_age_s:
            continue
        if _running(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _sweep_once() -> None:
    global _swept
    with _lock:
        if _swept:
            return
        _swept = True
    sweep_orphans()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
