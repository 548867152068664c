"""Scratch folders: removed on a normal exit, on Ctrl-C's `os._exit`, and after a kill by the
next radflow process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radflow import scratch
from radflow.scratch import ORPHAN_AGE_S, scratch_dir, sweep_orphans


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_a_scratch_folder_is_private_named_for_its_process_and_removed(tmpdir_env: Path) -> None:
    with scratch_dir("vol") as folder:
        (folder / "slice.dcm").write_bytes(b"x" * 10)
        assert folder.parent == tmpdir_env
        assert folder.name.startswith(f"radflow-vol-{os.getpid()}-")
        assert folder.stat().st_mode & 0o777 == 0o700
    assert list(tmpdir_env.iterdir()) == []


def _empty_within(root: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(root.iterdir()):
            return True
        time.sleep(0.05)
    return False


def test_close_removes_the_folders_in_use_even_one_a_thread_recreates(
    tmpdir_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "_closed", False)
    with scratch_dir("vol") as first, scratch_dir("report") as second:
        (first / "a").write_bytes(b"a")
        scratch.close()
        assert not first.exists() and not second.exists()
        # A task thread's download between the removal and the exit makes its parents again.
        (first / "series").mkdir(parents=True)
        (first / "series" / ".1.dcm.part").write_bytes(b"ct")
        with pytest.raises(RuntimeError, match="exiting"), scratch_dir("lake"):
            pass
    assert _empty_within(tmpdir_env, 10)


def test_the_sweep_removes_only_old_folders_of_processes_that_are_gone(tmpdir_env: Path) -> None:
    dead = _dead_pid()
    orphan = tmpdir_env / f"radflow-vol-{dead}-abcd1234"
    (orphan / "series").mkdir(parents=True)
    (orphan / "series" / "1.dcm").write_bytes(b"ct")
    _aged(orphan, ORPHAN_AGE_S + 60)
    young = tmpdir_env / f"radflow-vol-{dead}-young123"
    young.mkdir()
    mine = tmpdir_env / f"radflow-lake-{os.getpid()}-mine1234"
    mine.mkdir()
    _aged(mine, ORPHAN_AGE_S + 60)
    other_name = tmpdir_env / "radflow-test-prefect-123"
    other_name.mkdir()
    _aged(other_name, ORPHAN_AGE_S + 60)
    a_file = tmpdir_env / f"radflow-vol-{dead}-afile123"
    a_file.write_bytes(b"")
    _aged(a_file, ORPHAN_AGE_S + 60)

    assert sweep_orphans() == [orphan]
    assert sorted(p.name for p in tmpdir_env.iterdir()) == sorted(
        p.name for p in (young, mine, other_name, a_file)
    )


def test_the_first_scratch_folder_of_a_process_sweeps(
    tmpdir_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = tmpdir_env / f"radflow-segtrain-{_dead_pid()}-abcd1234"
    orphan.mkdir()
    _aged(orphan, ORPHAN_AGE_S + 60)
    monkeypatch.setattr(scratch, "_swept", False)
    with scratch_dir("vol"):
        assert not orphan.exists()


def test_ctrl_c_on_a_flow_command_removes_the_scratch_in_use(tmp_path: Path) -> None:
    """The CLI's Ctrl-C handler ends with os._exit, which runs no `finally`: a process inside
    a scratch folder, SIGINT, exit 130, and the folder gone."""
    root = tmp_path / "tmp"
    root.mkdir()
    code = (
        "import sys, time\n"
        "from flows.runtime.foreground import _on_interrupt\n"
        "import signal\n"
        "from radflow.scratch import scratch_dir\n"
        "signal.signal(signal.SIGINT, _on_interrupt(None))\n"
        "with scratch_dir('vol') as folder:\n"
        "    (folder / 'slice.dcm').write_bytes(b'x')\n"
        "    print(folder, flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "TMPDIR": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    folder = Path(child.stdout.readline().strip())
    assert folder.is_dir() and folder.parent == root
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=30) == 130
    assert _empty_within(root, 10)
