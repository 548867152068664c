"""The `radflow` commands that run flows, in process on the session's Prefect server: what they
print (`score` without a champion, `train --json`, `report`). The lakes they start from are the
session's, built by the stages (tests/support/lakes.py): only the command under test runs a flow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.lakes import IngestedLake, TrainedLake
from typer.testing import CliRunner

from radflow.cli import app
from radflow.stages.labels import store_labels

pytestmark = pytest.mark.flow

runner = CliRunner()


def test_score_without_a_champion_says_so(prefect_server: None, pipeline_env: Path) -> None:
    inbox = pipeline_env / "inbox"
    inbox.mkdir()
    result = runner.invoke(app, ["score", str(inbox)])
    assert result.exit_code == 2
    assert result.output.startswith("error: no champion model")  # before any flow starts
    assert "hint: run `radflow train`" in result.output
    assert "Traceback" not in result.output


def _drop_one_add_one(built: IngestedLake) -> str:
    """The labels as `radflow ingest --labels` stores them from a file with one study without a
    label and one label whose study never arrived; the original UID of the unlabelled study."""
    first, *rest = built.studies
    shutil.rmtree(built.root / "labels")
    rows = ["study_uid,label", *(f"{s.study_uid},{s.label}" for s in rest), "1.2.3.4.5.6.7.8.9,1"]
    store_labels(built.lake, "\n".join(rows) + "\n", built.settings.pseudonym_secret())
    return first.study_uid


def test_train_json_is_one_object_and_reports_labels(
    prefect_server: None,
    pipeline_env: Path,
    ingested: IngestedLake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    monkeypatch.setenv("RADFLOW_TRAIN__CANDIDATES", '["lr","rf"]')
    built = ingested.copy(pipeline_env)  # 12 studies, as `radflow ingest` leaves them
    first = _drop_one_add_one(built)

    result = runner.invoke(app, ["train", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # one object, nothing else on stdout
    assert out["promoted"] is True and out["reason"] == "no champion yet"
    assert out["model_id"].startswith(out["kind"] + "-")
    assert out["kind"] in {"lr", "rf", "ensemble"}
    assert 0.0 <= out["metrics"]["auc"] <= 1.0 and len(out["metrics"]["auc_ci"]) == 2
    assert out["labels"] == {
        "labelled_studies": 11,
        "unlabelled_studies": 1,
        "labels_without_study": 1,
        "stale_studies": 0,
    }
    assert first not in result.stdout  # an original UID never comes back


def test_report_rebuilds_a_studys_reports_once(
    prefect_server: None, pipeline_env: Path, ingested: IngestedLake, trained: TrainedLake
) -> None:
    import json

    ingested.copy(pipeline_env)  # as `radflow ingest` leaves the lake
    lake = pipeline_env / "lake"
    study = sorted(p.stem for p in (lake / "catalog").iterdir())[0]
    missing = runner.invoke(app, ["report", study])
    assert missing.exit_code == 2 and "no champion model" in missing.output
    trained.copy(pipeline_env)  # as `radflow train` leaves it: a champion

    first = runner.invoke(app, ["report", study, "--json"])
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert [k.rsplit("/", 1)[1] for k in out["reports"]] == [
        "study.html",
        "study.pdf",
        "sr.dcm",
        "report-pdf.dcm",
        "seg.dcm",
    ]
    stamps = {k: (lake / k).stat().st_mtime_ns for k in out["reports"]}
    again = runner.invoke(app, ["report", study, "--json"])
    assert json.loads(again.stdout) == out  # cached: the same keys, nothing rewritten
    assert {k: (lake / k).stat().st_mtime_ns for k in out["reports"]} == stamps
    assert study in (lake / out["reports"][0]).read_text()

    for bad, message in (("0123456789ab", "no study 0123456789ab"), ("../x", "bad study ID")):
        result = runner.invoke(app, ["report", bad])
        assert result.exit_code == 2 and message in result.output
        assert "hint: " in result.output and "Traceback" not in result.output
