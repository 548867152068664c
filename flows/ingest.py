"""Ingest: a delivery in object storage -> de-identified, preprocessed studies and features."""

from __future__ import annotations

from collections.abc import Coroutine

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture

from radflow.keys import short_id
from radflow.stages.quarantine import Prepared, delivery_summary
from tasks._common import connect_tag_checks, lake
from tasks.anonymize import anonymize, record_labels
from tasks.catalog import catalog
from tasks.features import features
from tasks.fetch import fetch
from tasks.volumes import preprocess


def outcome(future: PrefectFuture[str | None]) -> str | None:
    """A stage's key; None when it set the study aside, failed, or never ran because a stage
    before it failed (`broke` tells the last two from the first)."""
    future.wait()
    if broke(future):
        return None
    result = future.result()
    return result if isinstance(result, str) else None


def broke(future: PrefectFuture[str | None]) -> bool:
    """Failed, or left Pending ("NotReady") by a failed upstream stage."""
    return not future.state.is_completed()


def prepare_studies(source: str, prefix: str = "") -> Prepared:
    """fetch -> anonymize -> register + preprocess -> extract, fanned out per study.

    A quarantined study drops out (its record is in the lake); a study whose stage failed
    unexpectedly is counted, and the others go on either way: the caller finishes them and
    then fails the run with `Prepared.raise_if_failed`."""
    connect_tag_checks(fetch, anonymize, preprocess, features, catalog)
    refs = fetch(source, prefix)
    deid = anonymize.map(refs)
    volumes = preprocess.map(deid)
    rows = features.map(deid, volumes)
    # Sync calls here: the flow is synchronous, so these return the artifact's id.
    progress = create_progress_artifact(0.0, description="studies prepared") if refs else None
    assert not isinstance(progress, Coroutine)
    keys: list[str] = []
    cached = 0
    for done, row in enumerate(rows, start=1):
        key = outcome(row)
        if key:
            keys.append(key)
        cached += row.state.name == "Cached"
        if progress is not None and (done == len(rows) or done % max(1, len(rows) // 20) == 0):
            update_progress_artifact(progress, 100.0 * done / len(rows))
    chains = [
        (ref, outcome(d), outcome(v), outcome(r), broke(r))
        for ref, d, v, r in zip(refs, deid, volumes, rows, strict=True)
    ]
    summary = delivery_summary(lake(), chains, cached)
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


def delivery_run_name(kind: str) -> str:
    """`<kind>-<hash of the delivery's location>`: delivery names may hold PHI."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    return f"{kind}-{short_id(params['source'] + '/' + params.get('prefix', ''))}"


def ingest_steps(source: str, prefix: str = "", labels: str | None = None) -> list[str]:
    """labels -> prepare -> catalog; the feature keys of the delivery's studies."""
    if labels:
        record_labels(labels)
    prepared = prepare_studies(source, prefix)
    catalog(prepared.keys)
    prepared.raise_if_failed()
    return prepared.keys


@flow(name="ingest", flow_run_name=lambda: delivery_run_name("ingest"))
def ingest(source: str, prefix: str = "", labels: str | None = None) -> list[str]:
    """Labels (a local CSV of original StudyInstanceUID,label) are stored under pseudonyms."""
    return ingest_steps(source, prefix, labels)
