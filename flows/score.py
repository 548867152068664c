"""Score: a delivery of new studies -> champion scores and study reports."""

from __future__ import annotations

from prefect import flow, unmapped

from flows.ingest import _name, prepare_studies
from tasks.report import study_report
from tasks.score import current_champion, score


@flow(name="score", flow_run_name=lambda: "score-" + _name().removeprefix("ingest-"))
def score_flow(source: str, prefix: str = "") -> list[str]:
    """Report keys, one per scored study. Fails with "no champion model" when there is none."""
    model = current_champion()
    keys = prepare_studies(source, prefix)
    scores = score.map(keys, unmapped(model))
    reports = study_report.map(scores)
    return [r for r in reports.result() if r]
