"""Regions of interest from a hospital's own annotations: DICOM SEG, RTSTRUCT, label maps.

Pure library (no Prefect, no lake): a file and the series' grid in, masks out, or a
`QuarantineError` saying why the annotation cannot be used (with the offset in mm when it
is off the grid). The preprocess stage calls `segments_on_grid`, then `choose_segment`
with the `RoiSelection` from settings.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from radflow.annotations.kinds import READ_ERRORS, Kind, annotation_kind, not_an_annotation
from radflow.annotations.labelmap import labelmap_segments
from radflow.annotations.masks_csv import MaskEntry, read_masks_csv
from radflow.annotations.references import check_references, referenced_series
from radflow.annotations.rtstruct import rtstruct_segments
from radflow.annotations.seg import seg_segments
from radflow.annotations.segment import Segment, choose_segment
from radflow.errors import QuarantineError

DEFAULT_TOLERANCE_MM = 0.5

__all__ = [
    "DEFAULT_TOLERANCE_MM",
    "Kind",
    "MaskEntry",
    "Segment",
    "annotation_kind",
    "check_references",
    "choose_segment",
    "read_masks_csv",
    "referenced_series",
    "segments_on_grid",
]

_READERS = {"seg": seg_segments, "rtstruct": rtstruct_segments, "labelmap": labelmap_segments}
_NAMES = {"seg": "SEG", "rtstruct": "RTSTRUCT", "labelmap": "label map"}


def segments_on_grid(
    path: Path, reference: sitk.Image, *, tolerance_mm: float = DEFAULT_TOLERANCE_MM
) -> list[Segment]:
    """Every segment of the annotation at `path` as a uint8 0/1 mask on `reference`'s grid.

    The kind is decided by content (`annotation_kind`), not by the file's name. Voxels are
    never resampled: an annotation more than `tolerance_mm` off the grid is refused."""
    kind = annotation_kind(path)
    if kind is None:
        raise not_an_annotation(path)
    try:
        return _READERS[kind](path, reference, tolerance_mm)
    except READ_ERRORS as err:
        # A value pydicom or SimpleITK could not decode deep inside the file: bad input.
        raise QuarantineError(f"unreadable {_NAMES[kind]}", type(err).__name__) from None
