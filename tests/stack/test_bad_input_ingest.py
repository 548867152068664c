"""Bad input (issue 8) through `radflow ingest` in a child process: every bad file or study of
the delivery gets exactly one quarantine record with radflow's precise reason (the table of
`support/badinput.py`), the good studies are prepared, the raw inbox is left untouched, no record
carries PHI, and the child's memory stays bounded although one file declares 34 GB of pixels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.badinput import assert_no_phi, corpus, expected_records, records, snapshot

from radflow.config import load_settings
from radflow.store import open_store

pytestmark = pytest.mark.stack

MAX_RSS_KIB = 1536 * 1024  # 1.5 GiB: a fraction of what the absurd file declares


# The child reports its own VmHWM when it exits: ru_maxrss (and wait4's) is kept across exec,
# so a child of a big pytest process would report the parent's size instead.
PROBE = """
import atexit, os, pathlib
def peak():
    status = pathlib.Path("/proc/self/status").read_text().splitlines()
    kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    pathlib.Path(os.environ["RADFLOW_TEST_PEAK_FILE"]).write_text(kib)
atexit.register(peak)
from radflow.cli import app
app()
"""


def test_ingest_of_a_bad_delivery_quarantines_each_input_in_bounded_memory(
    prefect_server: None, pipeline_env: Path
) -> None:
    """`radflow ingest` in a child process on the session's Prefect server: the flow completes
    with the good studies, the records match the table, and the child's peak RSS stays far
    below the 34 GB the absurd file declares."""
    import prefect.settings

    folder, good, bad = corpus(pipeline_env)
    before = snapshot(folder)
    repo = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value()),
        "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
    }
    out, err = pipeline_env / "stdout", pipeline_env / "stderr"
    env["RADFLOW_TEST_PEAK_FILE"] = str(pipeline_env / "peak-kib")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", PROBE, "ingest", str(folder), "--json"],
            env=env,
            cwd=pipeline_env,
            stdout=stdout,
            stderr=stderr,
        )
        child.wait()
    assert child.returncode == 0, err.read_text()[-3000:]
    keys = json.loads(out.read_text())
    assert len(keys) == len(good)

    lake_root = pipeline_env / "lake"
    settings = load_settings()
    lake = open_store(settings.store_url, settings.s3_options())
    assert records(lake_root) == expected_records(bad, folder, lake, settings)
    assert_no_phi(lake_root, good)
    assert snapshot(folder) == before  # nothing deleted, changed or touched

    peak_kib = int((pipeline_env / "peak-kib").read_text())
    print(f"\npeak RSS of `radflow ingest`: {peak_kib / 1024:.0f} MiB")
    assert peak_kib < MAX_RSS_KIB
