"""Quarantine records in the lake: `quarantine/<stage>/<hash of the input>.json`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from radflow.errors import QuarantineError, RadflowError
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
class Prepared:
    """The feature keys of a delivery's prepared studies, and how many failed unexpectedly."""

    keys: list[str]
    failed: int
    seen: int

    def raise_if_failed(self) -> None:
        """Called once the other studies are finished, so one bad study never holds them up."""
        if self.failed:
            raise RadflowError(
                f"{self.failed} of {self.seen} studies failed unexpectedly; the others are done",
                hint="see the failed task runs; after a fix, run again (finished studies: Cached)",
            )


@dataclass(frozen=True)
class DeliverySummary:
    """What one run made of a delivery, for people watching the runs (counts and reasons only)."""

    seen: int
    prepared: int
    cached: int
    reasons: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    @property
    def quarantined(self) -> int:
        return self.seen - self.prepared - self.failed

    def markdown(self) -> str:
        rows = [
            ("studies seen", self.seen),
            ("prepared", self.prepared),
            ("of which cached (nothing recomputed)", self.cached),
            ("quarantined", self.quarantined),
            *((f"quarantined: {reason}", n) for reason, n in sorted(self.reasons.items())),
            ("failed (an error, not the input: see the failed task runs)", self.failed),
        ]
        return "| | studies |\n| --- | ---: |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def delivery_summary(
    store: ObjectStore,
    chains: Sequence[tuple[str, str | None, str | None, str | None, bool]],
    cached: int,
) -> DeliverySummary:
    """`chains`: per study, the keys its stages returned (reference, de-identified study,
    volume, feature row), None from the stage that set it aside or failed, and whether one
    failed."""
    reasons: Counter[str] = Counter()
    for ref, deid, volume, row, broke in chains:
        if row is not None or broke:
            continue
        stage, key = (
            ("anonymize", ref)
            if deid is None
            else ("preprocess", deid)
            if volume is None
            else ("features", volume)
        )
        reasons[reason_for(store, stage, key) or "not recorded"] += 1
    prepared = sum(1 for chain in chains if chain[3] is not None)
    failed = sum(1 for chain in chains if chain[4])
    return DeliverySummary(len(chains), prepared, cached, dict(reasons), failed)
