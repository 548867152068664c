"""Arrivals not scored yet: `pending/<arrival_id>.json`, written before the arrival's event is
sent and deleted once its scoring run has finished every study.

So no arrival is lost between the watcher and the report: if the event's run never starts
(the server refused to create it, a worker died with it), or failed, or waited for a champion,
the record is still there. The watcher announces records older than its `retry_after` again,
the next promotion announces them all, and `radflow score --pending` scores them by hand.
Scoring is idempotent, so announcing twice costs a Cached run, never a second report.
A record holds the inbox's URL and prefix (configuration, not PHI), the arrival's hash, why it
waits and since when.
"""

from __future__ import annotations

import json
from typing import Any

from radflow.store import ObjectStore

ANNOUNCED = "announced"
NO_CHAMPION = "no champion model"


def _key(arrival_id: str) -> str:
    return f"pending/{arrival_id}.json"


def record_pending(store: ObjectStore, arrival: dict[str, Any], reason: str, now: float) -> None:
    """(Re)write the record; `announcements` counts how often its event was sent."""
    sent = int(arrival.get("announcements", 0)) + (reason == ANNOUNCED)
    record = {**arrival, "reason": reason, "since": now, "announcements": sent}
    store.put_text(_key(arrival["arrival"]), json.dumps(record, sort_keys=True))


def read_pending(store: ObjectStore, arrival_id: str) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(store.get_text(_key(arrival_id)))
    except FileNotFoundError:  # never written, or its run has just finished
        return None
    return record


def pending_arrivals(store: ObjectStore) -> list[dict[str, Any]]:
    """The records now; one that a finishing run deletes while this reads is simply done."""
    records = []
    for info in store.list("pending/"):
        try:
            records.append(json.loads(store.get_text(info.key)))
        except FileNotFoundError:
            continue
    return records


def overdue(
    store: ObjectStore, retry_after: float, now: float, most: int = 3
) -> list[dict[str, Any]]:
    """Announced arrivals whose run has not finished `retry_after` seconds later, announced
    fewer than `most` times (one that keeps failing waits for `radflow score --pending`; those
    waiting for a champion are announced by the promotion)."""
    return [
        record
        for record in pending_arrivals(store)
        if record.get("reason") == ANNOUNCED
        and now - float(record["since"]) >= retry_after
        and int(record.get("announcements", 1)) < most
    ]


def clear_pending(store: ObjectStore, arrival_id: str) -> None:
    if store.exists(_key(arrival_id)):
        store.delete(_key(arrival_id))
