"""Scoring on arrival: a watcher turns stable inbox folders into `radflow.study.arrived` events;
the `score-study` deployment, triggered by each event, scores and reports that delivery."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.score import score_steps
from radflow.arrival import PollingWatcher, QueueWatcher, locate
from radflow.lake.records import PendingArrival
from radflow.store import open_store
from tasks.arrival import announce_arrival, announce_overdue, arrival_scored, require_champion
from tasks.runtime import lake, settings


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
            announce_arrival(
                lake(),
                PendingArrival(
                    source=source, prefix=prefix, depth=depth, arrival=arrival.arrival_id
                ),
            )
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
    require_champion(PendingArrival(source=source, prefix=prefix, depth=depth, arrival=arrival))
    folder = locate(open_store(source, settings().s3_options()), prefix, arrival, depth)
    reports = score_steps(source, folder)
    arrival_scored(arrival)
    return reports
