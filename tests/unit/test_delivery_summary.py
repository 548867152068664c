"""The per-delivery summary the CLI ends with: true counts, singular and plural, and the
deliveries that yielded no study (which make the command exit 1)."""

from __future__ import annotations

from radflow import progress
from radflow.console import ConsoleProgress
from radflow.delivery import DeliverySummary


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
