"""Quarantine records in the lake: `quarantine/<stage>/<hash of the input>.json`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

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


def reason_for(store: ObjectStore, stage: str, input_key: str) -> str | None:
    """The recorded reason `input_key` was set aside at `stage`, if it was."""
    key = QuarantineRecord.for_key(store.url, input_key, stage, "-").store_key
    if not store.exists(key):
        return None
    return QuarantineRecord.model_validate_json(store.get_bytes(key)).reason


@dataclass(frozen=True)
class DeliverySummary:
    """What one run made of a delivery, for people watching the runs (counts and reasons only)."""

    seen: int
    prepared: int
    cached: int
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        return self.seen - self.prepared

    def markdown(self) -> str:
        rows = [
            ("studies seen", self.seen),
            ("prepared", self.prepared),
            ("of which cached (nothing recomputed)", self.cached),
            ("quarantined", self.quarantined),
            *((f"quarantined: {reason}", n) for reason, n in sorted(self.reasons.items())),
        ]
        return "| | studies |\n| --- | ---: |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def delivery_summary(
    store: ObjectStore,
    chains: Sequence[tuple[str, str | None, str | None, str | None]],
    cached: int,
) -> DeliverySummary:
    """`chains`: per study, the keys its stages returned (reference, de-identified study,
    volume, feature row), None from the stage that set it aside."""
    reasons: Counter[str] = Counter()
    for ref, deid, volume, row in chains:
        if row is not None:
            continue
        stage, key = (
            ("anonymize", ref)
            if deid is None
            else ("preprocess", deid)
            if volume is None
            else ("features", volume)
        )
        reasons[reason_for(store, stage, key) or "not recorded"] += 1
    prepared = sum(1 for *_, row in chains if row is not None)
    return DeliverySummary(len(chains), prepared, cached, dict(reasons))
