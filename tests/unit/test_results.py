"""`radflow results`' rows, on the session's trained lake scored by the stages: each scored
study's own score and call, its report files where they are, filtered by delivery and time,
and the original StudyInstanceUID only from the re-identification map."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from support.lakes import IngestedLake, TrainedLake
from support.phi import phi_strings

from radflow.dicom.deid import reid_entry, study_pseudonym
from radflow.errors import NotFoundError, RadflowError
from radflow.lake import Lake
from radflow.results import (
    CSV_COLUMNS,
    delivery_id,
    original_identifiers,
    parse_since,
    record_scored,
    result_rows,
    rows_csv,
)
from radflow.stages.report import study_report_address, write_study_report
from radflow.stages.score import score_study

MONDAY, TUESDAY = delivery_id("file:///inbox", "monday"), delivery_id("file:///inbox", "tuesday")


@dataclass(frozen=True)
class Scored:
    built: TrainedLake
    reid: Path  # the folder the ingest stage wrote the map into
    scores: list[str]  # of studies 0-2 (monday: 0 and 1, reported: 0; tuesday: 2)
    originals: dict[str, tuple[str, str]]  # study ID -> original StudyInstanceUID, accession


@pytest.fixture(scope="module")
def scored(
    trained: TrainedLake, ingested: IngestedLake, tmp_path_factory: pytest.TempPathFactory
) -> Scored:
    built = trained.copy(tmp_path_factory.mktemp("results"))
    lake, secret = built.lake, built.settings.pseudonym_secret()
    scores = [score_study(lake, row, built.model) for row in built.rows[:3]]
    write_study_report(lake, scores[0])
    assert record_scored(lake, MONDAY, [scores[0], None, scores[1]]) == 2
    assert record_scored(lake, TUESDAY, [scores[2]]) == 1
    _scored_at(built, scores[:2], "2026-12-01T09:00:00Z")
    _scored_at(built, scores[2:], "2026-12-02T09:00:00Z")
    originals = {
        study_pseudonym(secret, s.study_uid): (
            s.study_uid,
            str(pydicom.dcmread(s.files[0], stop_before_pixels=True).AccessionNumber),
        )
        for s in built.studies
    }
    return Scored(built, ingested.root.parent / "reid", scores, originals)


def _scored_at(built: TrainedLake, scores: list[str], when: str) -> None:
    """Date the studies' pointers: when a study was scored is its pointer's time in the store."""
    seconds = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    for key in scores:
        pointer = built.root / "scored" / f"{built.lake.score(key).study_id}.json"
        os.utime(pointer, (seconds, seconds))


def test_each_row_is_its_studys_score_call_and_reports(scored: Scored) -> None:
    lake = scored.built.lake
    rows = result_rows(lake)  # by time, then study ID
    ids = [lake.score(k).study_id for k in scored.scores]
    assert [r.study_id for r in rows] == [*sorted(ids[:2]), ids[2]]
    key_of = dict(zip(ids, scored.scores, strict=True))
    for row in rows:
        score = lake.score(key_of[row.study_id])
        assert (row.probability, row.threshold, row.model_id, row.roi_source) == (
            score.probability,
            score.threshold,
            score.model_id,
            score.roi_source,
        )
        assert row.call == ("positive" if score.positive else "negative")
        assert row.study_uid is None
    reported = {r.study_id: r.reports for r in rows}
    first = reported.pop(ids[0])
    assert list(first) == ["html", "pdf", "sr", "seg", "pdf_dicom"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in first.values())
    assert Path(first["html"]).is_relative_to(scored.built.root / "reports")
    assert list(reported.values()) == [{}, {}]  # scored, not reported
    assert [r.delivery for r in rows] == [MONDAY, MONDAY, TUESDAY]


def test_rows_of_one_delivery_or_since_a_time(scored: Scored) -> None:
    lake = scored.built.lake
    monday = sorted(lake.score(k).study_id for k in scored.scores[:2])
    assert [r.study_id for r in result_rows(lake, delivery=MONDAY)] == monday
    tuesday = result_rows(lake, since=parse_since("2026-12-02"))
    assert [r.study_id for r in tuesday] == [lake.score(scored.scores[2]).study_id]
    assert result_rows(lake, delivery=MONDAY, since=parse_since("2026-12-02")) == []
    assert len(result_rows(lake, since=parse_since("2026-12-01T09:00:00Z"))) == 3


def test_scoring_the_same_result_again_rewrites_nothing(scored: Scored, tmp_path: Path) -> None:
    built = scored.built.copy(tmp_path / "again")
    lake, keys = built.lake, scored.scores
    objects = sorted((built.root / "scored").iterdir())
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in objects}
    # A cached rerun of Monday's delivery: the same scores, nothing rewritten, its time kept.
    assert record_scored(lake, MONDAY, [keys[0], keys[1]]) == 2
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in objects} == before
    # The same study in another delivery is a new scoring: its pointer moves, dated now.
    started = datetime.now(UTC).replace(microsecond=0)
    assert record_scored(lake, TUESDAY, [keys[0]]) == 1
    study = lake.score(keys[0]).study_id
    moved = lake.scored(study)
    assert moved is not None and moved.delivery == TUESDAY
    (row,) = [r for r in result_rows(lake) if r.study_id == study]
    assert datetime.fromisoformat(row.scored_at.replace("Z", "+00:00")) >= started


def test_rows_of_one_scoring_runs_reports(scored: Scored) -> None:
    lake = scored.built.lake
    report_key = f"{study_report_address(scored.scores[1])}/study.html"
    rows = result_rows(lake, reports=[report_key])
    assert [r.study_id for r in rows] == [lake.score(scored.scores[1]).study_id]
    assert result_rows(lake, reports=[]) == []


def test_the_map_gives_back_the_original_identifiers(scored: Scored) -> None:
    rows = result_rows(scored.built.lake, reid=scored.reid)
    assert [(r.study_uid, r.accession) for r in rows] == [
        scored.originals[r.study_id] for r in rows
    ]
    assert all(r.accession for r in rows)  # every synthetic study has one
    assert all(
        (r.as_json()["study_uid"], r.as_json()["accession"]) == (r.study_uid, r.accession)
        for r in rows
    )


def test_without_the_map_no_row_holds_phi(scored: Scored) -> None:
    rows = result_rows(scored.built.lake)
    text = json.dumps([r.as_json() for r in rows]) + rows_csv(rows)
    assert all("study_uid" not in r.as_json() and "accession" not in r.as_json() for r in rows)
    for phi in phi_strings(scored.built.studies):
        assert phi not in text


def test_a_map_file_of_anonymize_is_read_too(scored: Scored, tmp_path: Path) -> None:
    secret = scored.built.settings.pseudonym_secret()
    study = scored.built.studies[0]
    entry = reid_entry("PAT-1", "RF-1", study.study_uid, "2.25.1", secret, "ACC-9")
    other = scored.built.studies[1]
    older = json.loads(reid_entry("PAT-2", "RF-2", other.study_uid, "2.25.2", secret))
    del older["accession"]  # a map written before the accession was kept
    map_file = tmp_path / "map.jsonl"
    map_file.write_text(f"\n{entry}\n{json.dumps(older)}\n")
    wanted = study_pseudonym(secret, study.study_uid)
    second = study_pseudonym(secret, other.study_uid)
    assert original_identifiers(map_file, [wanted, second, "other"]) == {
        wanted: (study.study_uid, "ACC-9"),
        second: (other.study_uid, ""),
    }


def test_a_broken_map_names_its_line_not_its_content(tmp_path: Path) -> None:
    map_file = tmp_path / "map.jsonl"
    map_file.write_text('{"study_id": "a", "study_uid": "1.2.3"}\n{"patient_id": "Doe^Jane"}\n')
    with pytest.raises(RadflowError) as caught:
        original_identifiers(map_file, ["a"])
    assert str(caught.value) == "re-identification map map.jsonl line 2 is not a map entry"
    assert "Doe" not in str(caught.value) + caught.value.hint
    with pytest.raises(RadflowError, match="no re-identification map"):
        original_identifiers(tmp_path / "none", ["a"])


def test_csv_has_one_column_per_field_and_report(scored: Scored) -> None:
    rows = result_rows(scored.built.lake, reid=scored.reid)
    lines = rows_csv(rows).splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert len(lines) == 1 + len(rows)
    for line, row in zip(lines[1:], rows, strict=True):
        cells = dict(zip(CSV_COLUMNS, line.split(","), strict=True))
        assert cells["study_id"] == row.study_id
        assert (cells["study_uid"], cells["accession"]) == scored.originals[row.study_id]
        assert cells["call"] == row.call and float(cells["probability"]) == row.probability
        assert cells["report_sr"] == row.reports.get("sr", "")
    assert sum(bool(r.reports) for r in rows) == 1


def test_a_delivery_is_one_whichever_way_its_folder_is_given() -> None:
    assert delivery_id("file:///x/inbox", "new/") == delivery_id("file:///x/inbox/new/", "")
    assert delivery_id("s3://bucket", "inbox/d-1/") == delivery_id("s3://bucket/inbox/d-1", "")
    assert delivery_id("file:///x/inbox", "new") != delivery_id("file:///x/inbox", "old")


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-12-01", "2026-12-01T00:00:00Z"),
        ("2026-12-01T08:30", "2026-12-01T08:30:00Z"),
        ("2026-12-01T08:30:00+01:00", "2026-12-01T07:30:00Z"),
        ("2026-12-01T08:30:00Z", "2026-12-01T08:30:00Z"),
    ],
)
def test_since_is_read_as_utc(text: str, utc: str) -> None:
    assert parse_since(text) == utc


def test_a_bad_since_is_one_clear_error() -> None:
    with pytest.raises(RadflowError, match="bad --since 'last week'"):
        parse_since("last week")


def test_a_scored_study_is_found_without_the_catalog(scored: Scored, tmp_path: Path) -> None:
    """`radflow report` reads the catalog, which only ingest writes: a study that was only
    scored is found by its scoring."""
    built = scored.built.copy(tmp_path)
    lake: Lake = built.lake
    study = lake.score(scored.scores[2]).study_id
    (built.root / "catalog" / f"{study}.json").unlink()
    assert lake.study_features(study) == built.rows[2]
    (built.root / "scored" / f"{study}.json").unlink()
    with pytest.raises(NotFoundError, match=r"no study .* among the scored studies"):
        lake.study_features(study)


def test_the_results_command_prints_rows_as_json_csv_and_lines(
    scored: Scored, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No flow, no Prefect: the command reads the lake; the map folder of the settings
    (RADFLOW_DEID__REID_DIR) is used when it exists."""
    from typer.testing import CliRunner

    from radflow.cli import app

    monkeypatch.setenv("RADFLOW_STORE_URL", scored.built.root.as_uri())
    monkeypatch.setenv("RADFLOW_DEID__REID_DIR", str(scored.reid))
    runner = CliRunner()
    rows = result_rows(scored.built.lake, reid=scored.reid)
    as_json = runner.invoke(app, ["results", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == [r.as_json() for r in rows]
    as_csv = runner.invoke(app, ["results", "--csv", "--since", "2026-12-02"])
    assert as_csv.stdout == rows_csv(rows[2:])
    lines = runner.invoke(app, ["results"]).stdout.splitlines()
    assert len(lines) == 3
    assert lines[2].startswith(
        f"{rows[2].study_id} ({rows[2].study_uid}, accession {rows[2].accession}): {rows[2].call}"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json", "--csv"], "error: give --json or --csv, not both"),
        (["--map", "/nonexistent/map"], "error: no re-identification map at the given path"),
        (["/nonexistent/delivery"], "error: no scored study of that delivery in the lake"),
        (["--since", "yesterday"], "error: bad --since 'yesterday'"),
    ],
)
def test_results_mistakes_are_one_line_and_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from radflow.cli import app

    monkeypatch.setenv("RADFLOW_STORE_URL", (tmp_path / "lake").as_uri())
    result = CliRunner().invoke(app, ["results", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0] == message and lines[1].startswith("hint: ") and len(lines) == 2


def test_an_empty_lake_has_no_results_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from radflow.cli import app

    monkeypatch.setenv("RADFLOW_STORE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("RADFLOW_DEID__REID_DIR", str(tmp_path / "reid"))
    runner = CliRunner()
    assert runner.invoke(app, ["results"]).stdout == "no scored studies yet\n"
    assert json.loads(runner.invoke(app, ["results", "--json"]).stdout) == []
