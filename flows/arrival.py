"""Scoring on arrival: a watcher turns stable inbox folders into `radflow.study.arrived` events;
the `score-study` deployment, triggered by each event, scores and reports that delivery."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event

from flows.score import score_steps
from radflow.arrival import EVENT, PollingWatcher, QueueWatcher, locate
from radflow.errors import NotFoundError
from radflow.stages.pending import (
    ANNOUNCED,
    NO_CHAMPION,
    clear_pending,
    overdue,
    read_pending,
    record_pending,
)
from radflow.stages.registry import champion
from radflow.store import ObjectStore, open_store
from tasks._common import lake, settings


def announce(source: str, prefix: str, depth: int, arrival_id: str) -> None:
    """The event: a hash for the resource, where to look in the payload (never a folder name)."""
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"radflow.arrival.{arrival_id}",
            "prefect.resource.name": f"delivery {arrival_id[:12]}",
        },
        payload={"source": source, "prefix": prefix, "depth": depth, "arrival": arrival_id},
    )


def announce_arrival(
    lake_store: ObjectStore, source: str, prefix: str, depth: int, arrival_id: str
) -> None:
    """Record the arrival as pending, then send its event: if the event's run never comes, the
    record is still there to announce it again (radflow/stages/pending.py)."""
    record = read_pending(lake_store, arrival_id) or {
        "source": source,
        "prefix": prefix,
        "depth": depth,
        "arrival": arrival_id,
    }
    record_pending(lake_store, record, ANNOUNCED, time.time())
    announce(source, prefix, depth, arrival_id)


def announce_overdue(lake_store: ObjectStore, retry_after: float) -> int:
    """Announce again the arrivals whose run has not finished `retry_after` seconds later and
    is not waiting or running either (a long queue is no reason to score twice)."""
    late = overdue(lake_store, retry_after, time.time())
    busy = _in_flight([record["arrival"] for record in late]) if late else set()
    again = [record for record in late if record["arrival"][:12] not in busy]
    for record in again:
        announce_arrival(
            lake_store, record["source"], record["prefix"], record["depth"], record["arrival"]
        )
    return len(again)


def _in_flight(arrival_ids: list[str]) -> set[str]:
    """The arrivals (first 12 characters, as in run names) with a scoring run not yet final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    waiting = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    flt = FlowRunFilter(
        name=FlowRunFilterName(any_=[f"score-{a[:12]}" for a in arrival_ids]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=waiting)),
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=flt, limit=len(arrival_ids) * 4)
    return {run.name.removeprefix("score-") for run in runs}


@flow(name="watch-inbox", flow_run_name="watch-inbox")
def watch_inbox(
    source: str,
    prefix: str = "",
    stable_age: float = 30.0,
    depth: int = 1,
    queue_url: str | None = None,
    poll_seconds: float = 2.0,
    run_seconds: float | None = None,
    retry_after: float = 600.0,
) -> int:
    """Watch `source` (a store URL) under `prefix` until `run_seconds` pass (forever: None);
    with `queue_url`, read S3 notifications from that SQS queue instead of listing. Arrivals
    not scored `retry_after` seconds after their event are announced again."""
    inbox = open_store(source, settings().s3_options())
    watcher: PollingWatcher | QueueWatcher
    if queue_url:
        import boto3

        sqs = boto3.session.Session().client(
            "sqs", endpoint_url=settings().s3_endpoint_url, region_name=settings().s3_region
        )
        watcher = QueueWatcher(inbox, prefix, lake(), sqs, queue_url, stable_age, depth)
    else:
        watcher = PollingWatcher(inbox, prefix, lake(), stable_age, depth)
    log, emitted, started = get_run_logger(), 0, time.monotonic()
    while run_seconds is None or time.monotonic() - started < run_seconds:
        ready = (
            watcher.poll(int(poll_seconds)) if isinstance(watcher, QueueWatcher) else watcher.poll()
        )
        for arrival in ready:
            announce_arrival(lake(), source, prefix, depth, arrival.arrival_id)
            watcher.done(arrival)
            emitted += 1
            log.info("delivery %s arrived (%d objects)", arrival.arrival_id[:12], arrival.objects)
        if again := announce_overdue(lake(), retry_after):
            log.warning("%d deliveries not scored after %g s: announced again", again, retry_after)
        if not queue_url:
            time.sleep(poll_seconds)
    return emitted


def _arrival_run_name() -> str:
    from prefect.runtime import flow_run

    return f"score-{str(flow_run.parameters['arrival'])[:12]}"


@flow(name="score-study", flow_run_name=_arrival_run_name)
def score_arrival(source: str, arrival: str, prefix: str = "", depth: int = 1) -> list[str]:
    """Score the delivery `arrival` (its hash) found under `prefix` of `source`. Without a
    champion it fails with "no champion model" and is kept as pending; it stays pending until
    every study of it is done."""
    record: dict[str, Any] = read_pending(lake(), arrival) or {
        "source": source,
        "prefix": prefix,
        "depth": depth,
        "arrival": arrival,
    }
    try:
        champion(lake())
    except NotFoundError:
        record_pending(lake(), record, NO_CHAMPION, time.time())
        raise
    folder = locate(open_store(source, settings().s3_options()), prefix, arrival, depth)
    reports = score_steps(source, folder)
    clear_pending(lake(), arrival)
    return reports
