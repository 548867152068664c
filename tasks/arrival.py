"""Announce an arrival: record it as pending, then send its `radflow.study.arrived` event."""

from __future__ import annotations

import time

from prefect.events import emit_event

from radflow.arrival import ANNOUNCED, EVENT, NO_CHAMPION, mark_pending, overdue
from radflow.errors import NotFoundError
from radflow.lake import Lake
from radflow.lake.records import PendingArrival
from tasks.runtime import lake as current_lake
from tasks.runtime import task


def announce(record: PendingArrival) -> None:
    """The event: a hash for the resource, where to look in the payload (never a folder name)."""
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"radflow.arrival.{record.arrival}",
            "prefect.resource.name": f"delivery {record.arrival[:12]}",
        },
        payload={
            "source": record.source,
            "prefix": record.prefix,
            "depth": record.depth,
            "arrival": record.arrival,
        },
    )


def announce_arrival(lake: Lake, arrival: PendingArrival) -> None:
    """Record the arrival as pending, then send its event: if the event's run never comes, the
    record is still there to announce it again (`radflow.arrival`)."""
    record = lake.pending(arrival.arrival) or arrival
    announce(mark_pending(lake, record, ANNOUNCED, time.time()))


@task(task_run_name="announce-waiting", tags=["stage:train"])
def announce_waiting() -> int:
    """After a promotion: announce again the deliveries that arrived while there was none."""
    waiting = current_lake().pending_arrivals()
    for record in waiting:
        announce_arrival(current_lake(), record)
    return len(waiting)


def announce_overdue(lake: Lake, retry_after: float) -> int:
    """Announce again the arrivals whose run has not finished `retry_after` seconds later and
    is not waiting or running either (a long queue is no reason to score twice)."""
    late = overdue(lake, retry_after, time.time())
    busy = _in_flight([record.arrival for record in late]) if late else set()
    again = [record for record in late if record.arrival[:12] not in busy]
    for record in again:
        announce_arrival(lake, record)
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


def require_champion(arrival: PendingArrival) -> None:
    """Raise "no champion model" and keep the arrival pending for the next promotion."""
    try:
        current_lake().champion()
    except NotFoundError:
        record = current_lake().pending(arrival.arrival) or arrival
        mark_pending(current_lake(), record, NO_CHAMPION, time.time())
        raise


def arrival_scored(arrival: str) -> None:
    """Every study of the arrival is done: it is no longer pending."""
    current_lake().clear_pending(arrival)
