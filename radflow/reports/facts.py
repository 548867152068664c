"""What a study report says, gathered once and rendered as HTML, PDF and DICOM alike, so the
three never disagree."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

NOTICE = "Research use only. Not for diagnosis."


@dataclass(frozen=True)
class StudyFacts:
    """Everything is already de-identified: `study_id` is the pseudonym, never PHI."""

    study_id: str
    score: float  # calibrated probability of the positive class
    threshold: float
    model_id: str
    model_version: str
    report_date: str  # YYYYMMDD
    acquisition: Mapping[str, object]
    qc: Mapping[str, object]
    features: Mapping[str, float]
    key_image_png: bytes
    registration_png: bytes | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def positive(self) -> bool:
        return self.score >= self.threshold

    @property
    def call(self) -> str:
        return "positive" if self.positive else "negative"

    @property
    def date_iso(self) -> str:
        d = self.report_date
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"


def report_date() -> str:
    """Today (UTC) as YYYYMMDD, or the day of SOURCE_DATE_EPOCH when set (the reproducible-builds
    convention), so that two runs can produce byte-identical reports."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return time.strftime("%Y%m%d", time.gmtime(seconds))
