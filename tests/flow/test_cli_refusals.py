"""Refusals a user can act on: `radflow ingest` of a delivery that yields no study (empty, only
PNGs, only NIfTI) says so per delivery and exits 1 with a hint, and `radflow quarantine`
names each refused file by its path on this machine (the lake keeps only hashes)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from support.badinput import _png
from typer.testing import CliRunner

from radflow.cli import app

pytestmark = pytest.mark.flow

runner = CliRunner()


def _pngs(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = [folder / f"scan-{i}.png" for i in range(3)]
    for path in paths:
        path.write_bytes(_png())
    return paths


def _niftis(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = [folder / f"volume-{i}.nii.gz" for i in range(2)]
    for path in paths:
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    return paths


def test_an_empty_delivery_is_refused_before_any_flow(pipeline_env: Path) -> None:
    """An empty folder is the preflight's to refuse (tests/unit/test_preflight_cli.py): one
    line and a hint, exit 2, no flow run; the summary's own "no file" hint is for a delivery
    emptied between that check and the listing."""
    empty = pipeline_env / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["ingest", str(empty)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        "error: the delivery holds no files",
        "hint: give the folder or prefix the studies are in",
    ]
    assert not (pipeline_env / "lake" / "quarantine").exists()


@pytest.mark.parametrize(
    ("make", "reason"), [(_pngs, "not a DICOM instance"), (_niftis, "NIfTI is not ingested")]
)
def test_a_delivery_of_other_files_exits_1_and_each_file_is_found(
    prefect_server: None, pipeline_env: Path, make: object, reason: str
) -> None:
    folder = pipeline_env / "delivery"
    files = make(folder)  # type: ignore[operator]
    result = runner.invoke(app, ["ingest", str(folder)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert "ingested 0 studies" in lines
    assert f"  {len(files)} files refused:" in lines
    assert f"    {len(files)} {reason}" in lines
    assert (
        f"hint: `radflow quarantine {folder.resolve()}/` lists each refused input and why" in lines
    )

    listed = runner.invoke(app, ["quarantine", str(folder), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert sorted(r["location"] for r in rows) == sorted(str(f.resolve()) for f in files)
    assert {(r["stage"], r["reason"]) for r in rows} == {("fetch", reason)}
    assert all(r["detail"] for r in rows)
    # The lake holds the hashes only: no file name reached a record.
    for record in (pipeline_env / "lake" / "quarantine").rglob("*.json"):
        assert not [f.name for f in files if f.name in record.read_text()]


def test_a_plain_run_prints_no_prefect_notice_but_the_ui_keeps_every_log(tmp_path: Path) -> None:
    """A fresh process as a user starts it: Prefect's "See https://docs.prefect.io/…" notice
    is gone from the console, while the flow's own INFO lines still reach its database."""
    import os
    import sqlite3
    import subprocess
    import sys

    delivery = tmp_path / "delivery"
    _pngs(delivery)  # refused by fetch: the flow runs and logs, and the delivery yields nothing
    secret = tmp_path / "secret.key"
    secret.write_text("notice-secret-" + "0123456789abcdef" * 2)
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    env |= {
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "RADFLOW_STORE_URL": (tmp_path / "lake").as_uri(),
        "RADFLOW_CACHE_DIR": str(tmp_path / "cache"),
        "RADFLOW_SECRET_FILE": str(secret),
        "RADFLOW_DEID__REID_DIR": str(tmp_path / "reid"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "radflow.cli", "ingest", str(delivery)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "docs.prefect.io" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "  3 files refused:" in done.stdout.splitlines()
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        logged = [m for (m,) in db.execute("select message from log")]
    assert any(m.startswith("0 studies found, 0 prepared") for m in logged), logged
    assert any(m == "Finished in state Completed()" for m in logged)
