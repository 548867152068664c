"""Arrivals that could not be scored yet (no champion model): `pending/<arrival_id>.json`.

They are scored by `radflow score --pending`, and announced again after the next promotion.
A record holds the inbox's URL and prefix (configuration, not PHI) and the arrival's hash.
"""

from __future__ import annotations

import json
from typing import Any

from radflow.store import ObjectStore


def record_pending(store: ObjectStore, arrival: dict[str, Any]) -> None:
    store.put_text(f"pending/{arrival['arrival']}.json", json.dumps(arrival, sort_keys=True))


def pending_arrivals(store: ObjectStore) -> list[dict[str, Any]]:
    return [json.loads(store.get_text(o.key)) for o in store.list("pending/")]


def clear_pending(store: ObjectStore, arrival_id: str) -> None:
    if store.exists(f"pending/{arrival_id}.json"):
        store.delete(f"pending/{arrival_id}.json")
