"""Quarantine records in the lake: `quarantine/<stage>/<hash of the input>.json`."""

from __future__ import annotations

from radflow.errors import QuarantineError
from radflow.records import QuarantineRecord
from radflow.store import ObjectStore


def record(store: ObjectStore, rec: QuarantineRecord) -> str:
    store.put_text(rec.store_key, rec.model_dump_json(indent=1))
    return rec.store_key


def record_error(store: ObjectStore, stage: str, input_key: str, err: QuarantineError) -> str:
    """Set `input_key` aside; the reason is radflow's own words, so it carries no PHI."""
    rec = QuarantineRecord.for_key(store.url, input_key, stage, err.reason, type(err).__name__)
    return record(store, rec)


def count(store: ObjectStore) -> int:
    return sum(1 for _ in store.list("quarantine/"))
