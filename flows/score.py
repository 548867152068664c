"""Score: a delivery of new studies -> champion scores and study reports."""

from __future__ import annotations

from collections import Counter

from prefect import flow, unmapped

from flows.ingest import delivery_run_name, prepare_studies
from flows.outcomes import failure, outcome
from flows.runtime.tag_checks import connect_tag_checks
from radflow.delivery import Prepared
from radflow.results import delivery_id
from tasks.report import study_report
from tasks.score import current_champion, record_results, score


def score_steps(source: str, prefix: str = "") -> list[str]:
    """champion -> prepare -> score -> report -> record the results; report keys, one per
    scored study."""
    connect_tag_checks(current_champion, score, study_report)
    model = current_champion()
    studies = prepare_studies(source, prefix)
    scores = score.map(studies.keys, unmapped(model))
    reports = study_report.map(scores)
    done = [key for key in map(outcome, reports) if key]
    record_results(delivery_id(source, prefix), [outcome(s) for s in scores])
    causes = Counter(studies.causes)
    causes.update(c for s, r in zip(scores, reports, strict=True) if (c := failure(s, r)))
    Prepared(studies.keys, studies.seen, dict(causes)).raise_if_failed()
    return done


@flow(name="score", flow_run_name=lambda: delivery_run_name("score"))
def score_flow(source: str, prefix: str = "") -> list[str]:
    """Fails with "no champion model" when the registry has none yet."""
    return score_steps(source, prefix)
