"""Score: a delivery of new studies -> champion scores and study reports."""

from __future__ import annotations

from prefect import flow, unmapped

from flows.ingest import broke, delivery_run_name, outcome, prepare_studies
from radflow.stages.quarantine import Prepared
from tasks._common import connect_tag_checks
from tasks.report import study_report
from tasks.score import current_champion, score


def score_steps(source: str, prefix: str = "") -> list[str]:
    """champion -> prepare -> score -> report; report keys, one per scored study."""
    connect_tag_checks(current_champion, score, study_report)
    model = current_champion()
    prepared = prepare_studies(source, prefix)
    reports = study_report.map(score.map(prepared.keys, unmapped(model)))
    done = [key for key in map(outcome, reports) if key]
    failed = prepared.failed + sum(map(broke, reports))
    Prepared(prepared.keys, failed, prepared.seen).raise_if_failed()
    return done


@flow(name="score", flow_run_name=lambda: delivery_run_name("score"))
def score_flow(source: str, prefix: str = "") -> list[str]:
    """Fails with "no champion model" when the registry has none yet."""
    return score_steps(source, prefix)
