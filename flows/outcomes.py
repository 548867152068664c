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
from prefect.exceptions import FailedRun
from prefect.futures import PrefectFuture

from radflow import progress
from radflow.delivery import DeliverySummary, Prepared, StudyOutcome, refused_files
from radflow.privacy import failure_cause, scrubbed_cause
from radflow.store import StoreError, open_store
from tasks.runtime import lake, settings

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


def failure(*stages: Future) -> str | None:
    """What broke in one study's `stages` (its futures in order): the first failed one's cause,
    in `failure_cause`'s words; None when the last one did not break."""
    if not broke(stages[-1]):
        return None
    for future in stages:
        state = future.state
        if not state.is_failed():
            continue
        try:
            err = state.result(raise_on_failure=False)
        except Exception:  # not kept where this process can read it
            err = None
        if isinstance(err, BaseException) and not isinstance(err, FailedRun):
            return failure_cause(err)
        # From a Dask worker only the state's message comes back (a FailedRun).
        return scrubbed_cause(state.message or "") or "an error on a worker (see its task run)"
    return "an error radflow could not read back"


def prepared(
    delivery: tuple[str, str],
    refs: Sequence[str],
    deid: Sequence[Future],
    volumes: Sequence[Future],
    rows: Sequence[Future],
) -> Prepared:
    """Wait for every study's feature row (with a progress artifact, and a progress bar when
    the `radflow` command runs the flow at a console), then summarise. `delivery`: the
    inbox's URL and the delivery's prefix."""
    # Sync calls here: the flow is synchronous, so these return the artifact's id.
    artifact = create_progress_artifact(0.0, description="studies prepared") if refs else None
    assert not isinstance(artifact, Coroutine)
    progress.delivery_started(*delivery, len(refs))
    keys: list[str] = []
    cached = 0
    for done, row in enumerate(rows, start=1):
        if key := outcome(row):
            keys.append(key)
            # Only a study with a feature row counts as cached: a None passed on is not.
            cached += row.state.name == "Cached"
        progress.study_done("prepared" if key else "failed" if broke(row) else "quarantined")
        if artifact is not None and (done == len(rows) or done % max(1, len(rows) // 20) == 0):
            update_progress_artifact(artifact, 100.0 * done / len(rows))
    outcomes = [
        StudyOutcome(ref, outcome(d), outcome(v), outcome(r), failure(d, v, r))
        for ref, d, v, r in zip(refs, deid, volumes, rows, strict=True)
    ]
    try:
        refused = refused_files(
            lake(), open_store(delivery[0], settings().s3_options()), delivery[1]
        )
    except StoreError:  # the studies are done: a summary without this line beats a failed run
        get_run_logger().warning("could not list the delivery again to count refused files")
        refused = {}
    summary = DeliverySummary.of(lake(), outcomes, cached, refused)
    create_markdown_artifact(
        key="radflow-delivery-summary", markdown=summary.markdown(), description="radflow delivery"
    )
    get_run_logger().info(
        "%d studies found, %d prepared (%d of them cached), %d quarantined, %d failed;"
        " %d files refused",
        summary.seen,
        summary.prepared,
        summary.cached,
        summary.quarantined,
        summary.failed,
        summary.files_refused,
    )
    progress.delivery_finished(*delivery, summary)
    return Prepared(keys, summary.seen, summary.causes)
