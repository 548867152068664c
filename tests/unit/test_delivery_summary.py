"""The per-delivery summary the CLI ends with: true counts, singular and plural, and the
deliveries that yielded no study (which make the command exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from radflow import progress
from radflow.console import ConsoleProgress
from radflow.delivery import DeliverySummary, Prepared, StudyOutcome
from radflow.errors import RadflowError
from radflow.lake import Lake
from radflow.store import LocalStore


def test_a_first_run_shows_no_cached_studies() -> None:
    summary = DeliverySummary(seen=3, prepared=2, cached=0, reasons={"no lesion found": 1})
    assert summary.lines() == [
        "3 studies: 2 prepared, 1 quarantined, 0 failed",
        "  quarantined: 1 no lesion found",
    ]


def test_a_rerun_says_what_was_prepared_before() -> None:
    summary = DeliverySummary(seen=1, prepared=1, cached=1, refused={"empty file": 1})
    assert summary.lines() == [
        "1 study: 0 prepared, 1 already prepared before (cached), 0 quarantined, 0 failed",
        "1 file refused:",
        "  1 empty file",
    ]


def test_failed_studies_are_counted_by_what_broke(tmp_path: Path) -> None:
    """A full disk fails every study alike: the summary and the run's error say so once,
    instead of "failed unexpectedly" alone."""
    full = "features: OSError (ENOSPC: No space left on device)"
    outcomes = [
        StudyOutcome("raw-a", "deid-a", "vol-a", "row-a"),
        StudyOutcome("raw-b", "deid-b", "vol-b", None, full),
        StudyOutcome("raw-c", "deid-c", None, None, "preprocess: MemoryError"),
        StudyOutcome("raw-d", "deid-d", "vol-d", None, full),
    ]
    summary = DeliverySummary.of(Lake(LocalStore(tmp_path)), outcomes, cached=0)
    assert (summary.failed, summary.quarantined) == (3, 0)
    assert summary.lines() == [
        "4 studies: 1 prepared, 0 quarantined, 3 failed",
        f"  failed: 2 {full}",
        "  failed: 1 preprocess: MemoryError",
    ]
    assert f"| failed: {full} | 2 |" in summary.markdown()
    with pytest.raises(RadflowError) as info:
        Prepared(["row-a"], summary.seen, summary.causes).raise_if_failed()
    assert str(info.value).startswith(
        f"3 of 4 studies failed unexpectedly (2 {full}; 1 preprocess: MemoryError);"
        " the others are done"
    )


def test_no_study_found_names_the_refused_files() -> None:
    summary = DeliverySummary(seen=0, prepared=0, cached=0, refused={"not a DICOM instance": 3})
    assert summary.lines() == [
        "no DICOM study found",
        "3 files refused:",
        "  3 not a DICOM instance",
    ]
    assert "| files refused: not a DICOM instance | 3 |" in summary.markdown()


def test_the_console_collects_each_delivery_and_finds_the_empty_ones() -> None:
    full = DeliverySummary(seen=2, prepared=2, cached=0)
    empty = DeliverySummary(seen=1, prepared=0, cached=0, reasons={"missing slices": 1})
    with ConsoleProgress(show=False) as shown:
        for prefix, summary in (("a/", full), ("b/", empty)):
            progress.delivery_started("s3://inbox", prefix, summary.seen)
            progress.delivery_finished("s3://inbox", prefix, summary)
    progress.delivery_finished("s3://inbox", "c/", full)  # after the block: not heard
    assert [r.location for r in shown.deliveries] == ["s3://inbox/a/", "s3://inbox/b/"]
    assert [r.location for r in shown.empty()] == ["s3://inbox/b/"]
    assert shown.summary_lines()[:2] == [
        "delivery s3://inbox/a/",
        "  2 studies: 2 prepared, 0 quarantined, 0 failed",
    ]
