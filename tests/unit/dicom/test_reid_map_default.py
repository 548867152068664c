"""`radflow anonymize` without --map-file: the re-identification map (PHI) goes to the
user's data folder (mode 700, the map 600), never into the current directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from radflow.cli import app

SECRET = "reid-default-secret-" + "0123456789abcdef" * 2
PATIENT_ID = "MRN-REID-DEFAULT-42"


def test_the_map_goes_to_the_users_data_folder_and_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("RADFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RADFLOW_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("RADFLOW_SECRET", SECRET)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    src = tmp_path / "src"
    src.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = PATIENT_ID
    ds.save_as(src / "ct.dcm")
    old = os.umask(0o022)
    try:
        done = CliRunner().invoke(
            app, ["anonymize", str(src), str(tmp_path / "dst"), "--processes", "1"]
        )
    finally:
        os.umask(old)
    assert done.exit_code == 0, done.output

    assert list(cwd.iterdir()) == []
    folder = tmp_path / "data" / "radflow" / "reid"
    (map_file,) = folder.iterdir()
    assert str(map_file) in done.output  # the CLI says where it went
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(map_file.stat().st_mode) == 0o600
    (entry,) = [json.loads(line) for line in map_file.read_text().splitlines()]
    assert entry["patient_id"] == PATIENT_ID
