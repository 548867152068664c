"""What one run made of a delivery: each study's outcome, and the summary people read.

Counts and radflow's own reasons only (never a key or a name), so a summary can go to logs,
artifacts and the console.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from radflow.errors import RadflowError
from radflow.lake import Lake
from radflow.lake.records import QuarantineRecord
from radflow.store import ObjectStore


@dataclass(frozen=True)
class StudyOutcome:
    """The keys one study's stages returned: None from the stage that set it aside or failed,
    and every stage after it; `failure` says what broke when a stage failed unexpectedly (not
    bad input), in `radflow.privacy.failure_cause`'s words."""

    ref: str
    deid: str | None
    volume: str | None
    row: str | None
    failure: str | None = None

    @property
    def prepared(self) -> bool:
        return self.row is not None

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def stopped_at(self) -> tuple[str, str]:
        """The stage that set the study aside, and its input (how its record is found)."""
        if self.deid is None:
            return "anonymize", self.ref
        if self.volume is None:
            return "preprocess", self.deid
        return "features", self.volume


@dataclass(frozen=True)
class DeliverySummary:
    """What one run made of a delivery, for people watching the runs."""

    seen: int
    prepared: int
    cached: int
    reasons: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)  # files fetch refused, by reason
    causes: dict[str, int] = field(default_factory=dict)  # failed studies, by what broke

    @property
    def failed(self) -> int:
        return sum(self.causes.values())

    @property
    def quarantined(self) -> int:
        return self.seen - self.prepared - self.failed

    @property
    def files_refused(self) -> int:
        return sum(self.refused.values())

    @classmethod
    def of(
        cls,
        lake: Lake,
        outcomes: Sequence[StudyOutcome],
        cached: int,
        refused: dict[str, int] | None = None,
    ) -> DeliverySummary:
        reasons: Counter[str] = Counter()
        for outcome in outcomes:
            if outcome.prepared or outcome.failed:
                continue
            record = lake.quarantined(*outcome.stopped_at())
            reasons[record.reason if record else "not recorded"] += 1
        return cls(
            seen=len(outcomes),
            prepared=sum(o.prepared for o in outcomes),
            cached=cached,
            reasons=dict(reasons),
            refused=refused or {},
            causes=dict(Counter(o.failure for o in outcomes if o.failure is not None)),
        )

    def lines(self) -> list[str]:
        """The summary for the console: what a person needs to act on, one fact a line."""
        if not self.seen:
            lines = ["no DICOM study found"]
            if self.refused:
                lines.append(f"{_count(self.files_refused, 'file')} refused:")
                lines += [f"  {n} {reason}" for reason, n in sorted(self.refused.items())]
            return lines
        new = self.prepared - self.cached
        done = f"{_studies(self.seen)}: {new} prepared"
        if self.cached:
            done += f", {self.cached} already prepared before (cached)"
        done += f", {self.quarantined} quarantined, {self.failed} failed"
        lines = [done]
        lines += [f"  quarantined: {n} {reason}" for reason, n in sorted(self.reasons.items())]
        lines += [f"  failed: {n} {cause}" for cause, n in sorted(self.causes.items())]
        if self.refused:
            lines.append(f"{_count(self.files_refused, 'file')} refused:")
            lines += [f"  {n} {reason}" for reason, n in sorted(self.refused.items())]
        return lines

    def markdown(self) -> str:
        rows = [
            ("studies seen", self.seen),
            ("prepared", self.prepared),
            ("of which cached (nothing recomputed)", self.cached),
            ("quarantined", self.quarantined),
            *((f"quarantined: {reason}", n) for reason, n in sorted(self.reasons.items())),
            ("failed (an error, not the input: see the failed task runs)", self.failed),
            *((f"failed: {cause}", n) for cause, n in sorted(self.causes.items())),
            *((f"files refused: {reason}", n) for reason, n in sorted(self.refused.items())),
        ]
        return "| | studies |\n| --- | ---: |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _studies(n: int) -> str:
    return f"{n} stud{'y' if n == 1 else 'ies'}"


def refused_files(lake: Lake, inbox: ObjectStore, prefix: str) -> dict[str, int]:
    """Files of the delivery that fetch refused, by reason: its records are named by a hash
    of the inbox's URL and the file's key (`QuarantineRecord.for_key`), so the listing finds
    them with one listing of the lake's fetch records."""
    recorded = {info.key.rsplit("/", 1)[-1] for info in lake.store.list("quarantine/fetch/")}
    reasons: Counter[str] = Counter()
    for info in inbox.list(prefix):
        name = QuarantineRecord.input_hash(inbox.url, info.key) + ".json"
        if name in recorded:
            record = lake.quarantined_record(f"quarantine/fetch/{name}")
            reasons[record.reason] += 1
    return dict(reasons)


@dataclass(frozen=True)
class Prepared:
    """The feature keys of a delivery's prepared studies, and what broke in those that failed."""

    keys: list[str]
    seen: int
    causes: dict[str, int] = field(default_factory=dict)  # as in DeliverySummary

    @property
    def failed(self) -> int:
        return sum(self.causes.values())

    def raise_if_failed(self) -> None:
        """Called once the other studies are finished, so one bad study never holds them up."""
        if self.failed:
            why = "; ".join(f"{n} {cause}" for cause, n in sorted(self.causes.items()))
            raise RadflowError(
                f"{self.failed} of {self.seen} studies failed unexpectedly ({why}); "
                "the others are done",
                hint="see the failed task runs; after a fix, run again (finished studies: Cached)",
            )
