"""Which series and instances a SEG or RTSTRUCT says it annotates, and whether they are ours.

Where the references live (PS3.3): a SEG names its series in Referenced Series Sequence
(C.7.6.16, Common Instance Reference) and each frame's source image in the Derivation
Image Sequence; an RTSTRUCT in Referenced Frame of Reference Sequence > RT Referenced Study
> RT Referenced Series (C.8.8.5) and each contour's image in Contour Image Sequence.
Messages give counts, never UIDs: raw UIDs are PHI-adjacent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset

from radflow.annotations.kinds import (
    RT_STRUCTURE_SET_STORAGE,
    SEGMENTATION_CLASSES,
    annotation_kind,
    not_an_annotation,
    read_header,
)
from radflow.errors import QuarantineError

ANOTHER_SERIES = "annotation references another series"


def referenced_series(path: Path) -> str | None:
    """The SeriesInstanceUID a SEG or RTSTRUCT annotates (the first, if it names several);
    None for a label map, which names no series."""
    ds = _annotation(path)
    if ds is None:
        return None
    series = _series_uids(ds)
    return series[0] if series else None


def check_references(path: Path, series_uid: str, sop_instance_uids: set[str]) -> None:
    """Raise QuarantineError unless every series and instance the annotation references is
    `series_uid` and one of `sop_instance_uids`. A label map references nothing: it passes."""
    ds = _annotation(path)
    if ds is None:
        return
    series = set(_series_uids(ds))
    if not series:
        raise QuarantineError("annotation references no series", "no referenced series UID")
    others = series - {series_uid}
    if others:
        raise QuarantineError(
            ANOTHER_SERIES,
            f"{len(others)} of {len(series)} referenced series are not the study's series",
        )
    instances = set(_instance_uids(ds))
    missing = instances - sop_instance_uids
    if missing:
        raise QuarantineError(
            ANOTHER_SERIES,
            f"{len(missing)} of {len(instances)} referenced instances are not in the series"
            f" ({len(sop_instance_uids)} instances)",
        )


def _annotation(path: Path) -> Dataset | None:
    kind = annotation_kind(path)
    if kind is None:
        raise not_an_annotation(path)
    if kind == "labelmap":
        return None
    return read_header(path)


def _series_uids(ds: Dataset) -> list[str]:
    if ds.SOPClassUID in SEGMENTATION_CLASSES:
        items = list(ds.get("ReferencedSeriesSequence") or [])
    elif ds.SOPClassUID == RT_STRUCTURE_SET_STORAGE:
        items = [
            series
            for frame in ds.get("ReferencedFrameOfReferenceSequence") or []
            for study in frame.get("RTReferencedStudySequence") or []
            for series in study.get("RTReferencedSeriesSequence") or []
        ]
    else:
        items = []
    found = [str(item.SeriesInstanceUID) for item in items if item.get("SeriesInstanceUID")]
    return list(dict.fromkeys(found))


def _instance_uids(ds: Dataset) -> Iterator[str]:
    """Every Referenced SOP Instance UID that names an image of the annotated series."""
    if ds.SOPClassUID in SEGMENTATION_CLASSES:
        for series in ds.get("ReferencedSeriesSequence") or []:
            yield from _referenced(series.get("ReferencedInstanceSequence"))
        for frame in ds.get("PerFrameFunctionalGroupsSequence") or []:
            for derivation in frame.get("DerivationImageSequence") or []:
                yield from _referenced(derivation.get("SourceImageSequence"))
    else:
        for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
            for study in frame.get("RTReferencedStudySequence") or []:
                for series in study.get("RTReferencedSeriesSequence") or []:
                    yield from _referenced(series.get("ContourImageSequence"))
        for roi in ds.get("ROIContourSequence") or []:
            for contour in roi.get("ContourSequence") or []:
                yield from _referenced(contour.get("ContourImageSequence"))


def _referenced(items: object) -> Iterator[str]:
    for item in items or []:  # type: ignore[attr-defined]
        uid = item.get("ReferencedSOPInstanceUID")
        if uid:
            yield str(uid)
