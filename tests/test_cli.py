"""The `radflow` command: user mistakes give one line and a hint, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from radflow.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "/no/such/folder"], "error: no folder at /no/such/folder"),
        (["ingest", "ftp://host/x"], "error: bad source 'ftp://host/x'"),
        (["score", "s3://"], "error: bad source 's3://': no bucket"),
        (["synth", "out", "--size", "64x64"], "error: bad --size '64x64'"),
    ],
)
def test_user_mistakes_are_one_line_and_a_hint(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0] == message or lines[0].startswith(message)
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.output


def test_missing_labels_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path), "--labels", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "no labels file" in result.output


def test_synth_writes_studies_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = runner.invoke(app, ["synth", str(out), "--studies", "2", "--size", "32x32x10"])
    assert result.exit_code == 0, result.output
    assert len(list(out.rglob("*.dcm"))) >= 20
    assert (out / "labels.csv").read_text().count("\n") == 3


@pytest.mark.slow
def test_score_without_a_champion_says_so(prefect_server: None, pipeline_env: Path) -> None:
    inbox = pipeline_env / "inbox"
    inbox.mkdir()
    result = runner.invoke(app, ["score", str(inbox)])
    assert result.exit_code == 2
    assert result.output.startswith("error: no champion model")  # before any flow starts
    assert "hint: run `radflow train`" in result.output
    assert "Traceback" not in result.output


def test_inspect_nifti_json_matches_nibabel() -> None:
    import json

    import nibabel as nib
    import numpy as np

    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    affine = nib.load(path).affine
    lps = np.diag([-1, -1, 1]) @ affine[:3, :4]
    assert got["origin"] == pytest.approx(list(lps[:, 3]))
    assert got["size"] == list(nib.load(path).shape[:3])


def test_inspect_missing_path() -> None:
    result = runner.invoke(app, ["inspect", "/no/such.nii"])
    assert result.exit_code == 2 and result.output.startswith("error: nothing at /no/such.nii")
