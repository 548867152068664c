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


@dataclass(frozen=True)
class StudyOutcome:
    """The keys one study's stages returned: None from the stage that set it aside or failed,
    and every stage after it; `failed` when a stage failed unexpectedly (not bad input)."""

    ref: str
    deid: str | None
    volume: str | None
    row: str | None
    failed: bool

    @property
    def prepared(self) -> bool:
        return self.row is not None

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
    failed: int = 0

    @property
    def quarantined(self) -> int:
        return self.seen - self.prepared - self.failed

    @classmethod
    def of(cls, lake: Lake, outcomes: Sequence[StudyOutcome], cached: int) -> DeliverySummary:
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
            failed=sum(o.failed for o in outcomes),
        )

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
