"""Report: rebuild one study's reports from what the lake holds (cached, so idempotent)."""

from __future__ import annotations

from prefect import flow

from radflow.keys import short_id
from tasks.catalog import features_of
from tasks.report import study_report
from tasks.score import current_champion, score


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"report-{short_id(flow_run.parameters['study_id'])}"


@flow(name="report", flow_run_name=_run_name)
def report_flow(study_id: str) -> str | None:
    """The study's current features, scored by the champion, reported. None when the study is
    quarantined at scoring (its record says why)."""
    return study_report(score(features_of(study_id), current_champion()))
