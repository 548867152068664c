"""DICOM Segmentation (PS3.3 A.51) read with highdicom and placed on a series' grid.

Frames are checked one by one against the series' voxel centres first, so that a SEG made
on another reconstruction is refused with its offset in mm; then highdicom assembles the
frames into a volume (`Segmentation.get_volume`: missing frames are empty, fractional
values rescaled to 0..1) and `grid.place_on_grid` puts it on the series' grid.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from radflow.annotations.grid import offset_from_grid_mm, place_on_grid
from radflow.annotations.segment import Segment
from radflow.errors import QuarantineError

# A fractional SEG's voxel belongs to the segment when its probability or occupancy is at
# least one half: the convention of highdicom's and dcmqi's converters to binary masks.
FRACTIONAL_THRESHOLD = 0.5
_READ_ERRORS = (ValueError, AttributeError, KeyError, TypeError, IndexError, OSError, EOFError)


def seg_segments(path: Path, reference: sitk.Image, tolerance_mm: float) -> list[Segment]:
    """Every segment of the SEG at `path` as a mask on `reference`'s grid."""
    try:
        seg = hd.seg.segread(path)
    except _READ_ERRORS as err:
        raise QuarantineError("unreadable SEG", type(err).__name__) from None
    _check_frames(seg, reference, tolerance_mm)
    numbers = list(seg.segment_numbers)
    if not numbers:
        raise QuarantineError("annotation has no segments", "the SEG's Segment Sequence is empty")
    try:
        volume = seg.get_volume(
            segment_numbers=numbers,
            combine_segments=False,
            rescale_fractional=True,
            atol=2 * tolerance_mm,
        )
    except (RuntimeError, ValueError) as err:
        raise QuarantineError("SEG frames do not form a volume", type(err).__name__) from None
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    if fractional:
        volume = volume.with_array(np.asarray(volume.array) >= FRACTIONAL_THRESHOLD)
    placed = place_on_grid(volume, reference, tolerance_mm, what="SEG", slice_axis=0)
    return [
        Segment(number=n, label=_label(seg, n), code=_code(seg, n), mask=image != 0)
        for n, image in zip(numbers, placed, strict=True)
    ]


def _label(seg: hd.seg.Segmentation, number: int) -> str:
    return str(seg.get_segment_description(number).segment_label or f"segment {number}")


def _code(seg: hd.seg.Segmentation, number: int) -> str | None:
    concept = seg.get_segment_description(number).segmented_property_type
    if concept is None:
        return None
    return f"{concept.scheme_designator}:{concept.value}"


def _check_frames(seg: Dataset, reference: sitk.Image, tolerance_mm: float) -> None:
    """Each frame's first pixel must be a voxel centre of the series, within the tolerance."""
    worst = max((offset_from_grid_mm(reference, p) for p in _frame_positions(seg)), default=0.0)
    if worst > tolerance_mm:
        raise QuarantineError(
            "SEG frame is off the series' grid",
            f"by {worst:.2f} mm (tolerance {tolerance_mm:g} mm)",
        )


def _frame_positions(seg: Dataset) -> list[tuple[float, float, float]]:
    """Every frame's ImagePositionPatient (Plane Position group, per frame or shared);
    highdicom has already refused a SEG whose frames have none."""
    shared = _plane_position(seg.get("SharedFunctionalGroupsSequence"))
    positions = []
    for item in seg.get("PerFrameFunctionalGroupsSequence") or []:
        found = _plane_position([item]) or shared
        if found is not None:
            positions.append(found)
    return positions


def _plane_position(groups: object) -> tuple[float, float, float] | None:
    if not groups:
        return None
    item = groups[0]  # type: ignore[index]
    planes = item.get("PlanePositionSequence")
    if not planes or "ImagePositionPatient" not in planes[0]:
        return None
    x, y, z = (float(v) for v in planes[0].ImagePositionPatient)
    return (x, y, z)
