"""What a study report says, gathered once and rendered as HTML, PDF and DICOM alike, so the
three never disagree."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from radflow.lake.records import SeriesSelection

NOTICE = "Research use only. Not for diagnosis."
KEY_FEATURES = (
    "original_shape_VoxelVolume",
    "original_shape_MajorAxisLength",
    "original_shape_Sphericity",
    "original_firstorder_Mean",
    "original_firstorder_Median",
    "original_firstorder_Entropy",
    "original_firstorder_Skewness",
    "original_firstorder_Kurtosis",
)


@dataclass(frozen=True)
class StudyFacts:
    """Everything is already de-identified: `study_id` is the pseudonym, never PHI."""

    study_id: str
    score: float  # calibrated probability of the positive class
    threshold: float
    # The score's own call (made on the unrounded probability: a calibrated probability often
    # equals the threshold, and rounding it could flip the call), never recomputed here.
    positive: bool
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
    def call(self) -> str:
        return "positive" if self.positive else "negative"

    def summary(self) -> list[tuple[str, str]]:
        """The result block every rendering opens with."""
        return [
            ("Study (pseudonym)", self.study_id),
            ("Score (calibrated probability)", f"{self.score:.3f}"),
            ("Operating threshold", f"{self.threshold:.3f}"),
            ("Call", self.call),
            ("Model", f"{self.model_id} (radflow {self.model_version})"),
            ("Report date", self.date_iso),
        ]

    def key_features(self) -> list[tuple[str, float]]:
        """A few features a reader can relate to the image (the rest are in the lake)."""
        names = [n for n in KEY_FEATURES if n in self.features] or sorted(self.features)[:8]
        return [(n, self.features[n]) for n in names]

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


def selection_rows(selection: SeriesSelection | None) -> dict[str, str]:
    """The series selection as two short QC rows: the series used (primary, secondaries)
    and those left out with the rule that dropped them, objects included."""
    if selection is None:
        return {}

    def name(modality: str, number: int | None, count: int, unit: str) -> str:
        plural = "s" * (count != 1)
        return f"{modality} #{number if number is not None else '?'} ({count} {unit}{plural})"

    kept = [
        f"{name(c.modality, c.series_number, c.frames, 'slice')} {c.role}" for c in selection.kept
    ]
    dropped = [
        f"{name(c.modality, c.series_number, c.frames, 'slice')}: {c.rule}"
        for c in selection.dropped
    ] + [
        f"{name(o.kind, o.series_number, o.instances, 'object')}: object" for o in selection.objects
    ]
    return {"Series kept": "; ".join(kept), "Series dropped": "; ".join(dropped) or "none"}
