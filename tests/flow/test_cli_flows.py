"""The `radflow` commands that run flows, in process on the session's Prefect server: what they
print (`score` without a champion, `train --json`, `report`). The lakes they start from are the
session's, built by the stages (tests/support/lakes.py): only the command under test runs a flow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
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
    (inbox / "IM0001.dcm").write_bytes(b"not read: the champion is checked first")
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


def test_results_key_every_scored_study_back_to_its_uid(
    prefect_server: None,
    pipeline_env: Path,
    trained: TrainedLake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a real `radflow score`: `radflow results --json` lists every scored study with
    its original StudyInstanceUID from the map the score run wrote, and without it when the
    map is not there; `score --json` printed the same rows, pseudonymous; `radflow report`
    finds a study that was only scored (not in the catalog)."""
    import json

    import highdicom as hd

    from radflow.reports.dicom import CALL, CALLS
    from radflow.results import delivery_id
    from radflow.synth import SynthSpec, synthesize

    trained.copy(pipeline_env)  # a champion, made by the stages, into this lake
    new = synthesize(
        pipeline_env / "inbox" / "new",
        pipeline_env / "new-labels.csv",
        SynthSpec(studies=3, rows=40, columns=40, slices=16, seed=11),
    )
    scored = runner.invoke(app, ["score", str(pipeline_env / "inbox" / "new"), "--json"])
    assert scored.exit_code == 0, scored.output
    score_rows = json.loads(scored.stdout)

    with_map = runner.invoke(app, ["results", "--json"])
    assert with_map.exit_code == 0, with_map.output
    rows = json.loads(with_map.stdout)
    from_map = {"study_uid", "accession"}  # PHI: only `radflow results` prints them
    assert [{k: v for k, v in r.items() if k not in from_map} for r in rows] == score_rows
    for study in new:  # score's own output stays pseudonymous
        assert study.study_uid not in scored.stdout
    assert sorted(r["study_uid"] for r in rows) == sorted(s.study_uid for s in new)
    accessions = {
        str(pydicom.dcmread(s.files[0], stop_before_pixels=True).AccessionNumber) for s in new
    }
    assert {r["accession"] for r in rows} == accessions
    assert not [a for a in accessions if a in scored.stdout]
    assert {r["delivery"] for r in rows} == {delivery_id((pipeline_env / "inbox").as_uri(), "new")}
    for row in rows:  # the call the SR states, read back as a PACS would
        assert all(Path(p).is_file() for p in row["reports"].values()) and row["reports"]
        sr = hd.sr.srread(row["reports"]["sr"])
        (group,) = sr.content.get_image_measurement_groups()
        (call,) = group.get_qualitative_evaluations(name=CALL)
        assert call.value == CALLS[row["call"]]
    by_delivery = runner.invoke(app, ["results", str(pipeline_env / "inbox" / "new"), "--json"])
    assert json.loads(by_delivery.stdout) == rows

    monkeypatch.setenv("RADFLOW_DEID__REID_DIR", str(pipeline_env / "elsewhere"))
    without = runner.invoke(app, ["results", "--json"])
    assert without.exit_code == 0, without.output
    assert json.loads(without.stdout) == [
        {k: v for k, v in r.items() if k not in from_map} for r in rows
    ]
    for study in new:
        assert study.study_uid not in without.stdout
    assert not [a for a in accessions if a in without.stdout]

    study = rows[0]["study_id"]
    assert not (pipeline_env / "lake" / "catalog" / f"{study}.json").exists()
    report = runner.invoke(app, ["report", study, "--json"])
    assert report.exit_code == 0, report.output
    folder = Path(rows[0]["reports"]["html"]).parent
    assert json.loads(report.stdout)["reports"][0] == str(
        (folder / "study.html").relative_to(pipeline_env / "lake")
    )


def test_a_failed_delivery_prints_its_summary_before_the_error(
    prefect_server: None, pipeline_env: Path
) -> None:
    """pydicom's real dicomdirtests studies into a lake where nothing can be written under
    `deid/` (a file stands there): every study fails in anonymize, and the command says so by
    cause, its delivery summary first, no name from the headers anywhere."""
    from support.realstudies import DICOMDIR_TESTS, copy_tree

    inbox = pipeline_env / "inbox"
    files = copy_tree(DICOMDIR_TESTS, inbox)
    (pipeline_env / "lake").mkdir()
    (pipeline_env / "lake" / "deid").write_text("not a folder")
    result = runner.invoke(app, ["ingest", str(inbox)])
    assert result.exit_code == 2, result.output
    cause = "anonymize: NotADirectoryError (ENOTDIR: Not a directory)"
    lines = result.output.splitlines()
    summary = lines.index("  7 studies: 0 prepared, 0 quarantined, 7 failed")
    assert lines[summary + 1] == f"    failed: 7 {cause}"
    error = lines.index(
        f"error: 7 of 7 studies failed unexpectedly (7 {cause}); the others are done"
    )
    assert summary < error
    names = set()
    for path in files:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        names |= {str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))} - {""}
    assert names and not any(name in result.output for name in names)
