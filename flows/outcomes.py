"""Reading per-study futures back: each study's keys, what was cached, what broke, and the
delivery's summary for people (an artifact and a log line). Flows compose; this counts."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture

from radflow.delivery import DeliverySummary, Prepared, StudyOutcome
from tasks.runtime import lake

Future = PrefectFuture[str | None]


def outcome(future: Future) -> str | None:
    """A stage's key; None when it set the study aside, failed, or never ran because a stage
    before it failed (`broke` tells the last two from the first)."""
    future.wait()
    if broke(future):
        return None
    result = future.result()
    return result if isinstance(result, str) else None


def broke(future: Future) -> bool:
    """Failed, or left Pending ("NotReady") by a failed upstream stage."""
    return not future.state.is_completed()


def prepared(
    refs: Sequence[str], deid: Sequence[Future], volumes: Sequence[Future], rows: Sequence[Future]
) -> Prepared:
    """Wait for every study's feature row (with a progress artifact), then summarise."""
    # Sync calls here: the flow is synchronous, so these return the artifact's id.
    progress = create_progress_artifact(0.0, description="studies prepared") if refs else None
    assert not isinstance(progress, Coroutine)
    keys: list[str] = []
    cached = 0
    for done, row in enumerate(rows, start=1):
        if key := outcome(row):
            keys.append(key)
        cached += row.state.name == "Cached"
        if progress is not None and (done == len(rows) or done % max(1, len(rows) // 20) == 0):
            update_progress_artifact(progress, 100.0 * done / len(rows))
    outcomes = [
        StudyOutcome(ref, outcome(d), outcome(v), outcome(r), broke(r))
        for ref, d, v, r in zip(refs, deid, volumes, rows, strict=True)
    ]
    summary = DeliverySummary.of(lake(), outcomes, cached)
    create_markdown_artifact(
        key="radflow-delivery-summary", markdown=summary.markdown(), description="radflow delivery"
    )
    get_run_logger().info(
        "%d studies found, %d prepared (%d cached), %d quarantined, %d failed",
        summary.seen,
        summary.prepared,
        summary.cached,
        summary.quarantined,
        summary.failed,
    )
    return Prepared(keys, summary.failed, summary.seen)
