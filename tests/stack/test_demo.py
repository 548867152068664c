"""`radflow demo` as a user runs it: a fresh process, no server, no bucket, no network.

Cold, then warm on the same workdir (Cached, nothing rewritten) and, at the same time, cold
again in another workdir with the same seed and secret: the lake must be byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

STUDIES = "10"


def _start(workdir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "radflow.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--studies",
            STUDIES,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _demo(workdir: Path) -> subprocess.CompletedProcess[str]:
    return _finish(_start(workdir))


def _lake(workdir: Path) -> dict[str, tuple[int, bytes]]:
    root = workdir / "lake"
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_demo_cold_warm_and_reproducible(tmp_path: Path) -> None:
    first = tmp_path / "first"
    cold = _demo(first)
    assert cold.returncode == 0, cold.stdout[-3000:] + cold.stderr[-3000:]
    assert "created a demo pseudonymisation secret" in cold.stdout
    assert "radflow demo finished" in cold.stdout
    assert "Traceback" not in cold.stdout + cold.stderr
    lake = _lake(first)
    reports = [k for k in lake if k.endswith("study.html")]
    # A fifth of 10 studies are the "new" delivery, without annotations (as arrivals come):
    # a bright lesion the rule finds, and a soft-tissue lesion it cannot (quarantined, no
    # report). 8 labelled studies leave too few annotated fit patients for a segmentation
    # model (`make demo`'s 40 studies train one; tests/flow/test_segmentation_scoring.py
    # scores through it).
    assert len(reports) == 1
    assert "study reports:  1 of 2 new studies" in cold.stdout
    assert ", ROI from rule 1\n" in cold.stdout
    assert (
        "segmentation:   not trained: fewer than 4 annotated studies among the fit patients"
        in cold.stdout
    )
    # The 8 labelled studies: 7 annotated (SEG or RTSTRUCT), one soft-tissue lesion without.
    assert (
        "training:       7 of 8 studies prepared, ROI from annotation:RTSTRUCT 3, "
        "annotation:SEG 4;" in cold.stdout
    )
    assert sum(k.endswith("model.html") for k in lake) == 1
    assert "models/champion.json" in lake
    assert (first / "secret.key").stat().st_mode & 0o077 == 0

    # The warm rerun and a second cold run are independent: one on each core.
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy2(first / "secret.key", second / "secret.key")
    running = _start(second)
    warm = _demo(first)
    again = _finish(running)
    assert warm.returncode == 0, warm.stdout[-3000:] + warm.stderr[-3000:]
    log = warm.stdout + warm.stderr
    # Every study's anonymize, preprocess and features, the scored study's score and report.
    assert log.count("Cached(type=COMPLETED)") >= 3 * int(STUDIES) + 2
    assert "Finished in state Completed()" in log  # only uncached bookkeeping tasks
    assert _lake(first) == lake  # nothing rewritten or touched

    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    first_bytes = {k: v[1] for k, v in lake.items()}
    second_bytes = {k: v[1] for k, v in _lake(second).items()}
    assert first_bytes.keys() == second_bytes.keys()
    differing = [k for k in first_bytes if first_bytes[k] != second_bytes[k]]
    # A scored study's pointer names its delivery by a hash of the delivery's location, and
    # the two runs' inboxes are different folders: all else in it is the same.
    pointers = [k for k in differing if k.startswith("scored/")]
    assert pointers == [k for k in first_bytes if k.startswith("scored/")] != []
    for key in pointers:
        one, two = json.loads(first_bytes[key]), json.loads(second_bytes[key])
        assert one.pop("delivery") != two.pop("delivery")
        assert one == two
    assert not [k for k in differing if k not in pointers], differing[:5]
