"""RT Structure Set (PS3.3 A.19) contours rasterised onto a series' grid, slice by slice.

Each CLOSED_PLANAR contour must lie in one slice plane of the series and inside its
extent (within the tolerance, in mm); it is filled there with scikit-image's
`polygon2mask`, which takes a voxel when its centre is inside the polygon. Contours of
one ROI on one slice combine by exclusive or, so a contour inside another is a hole
(the usual reading of nested contours; PS3.3 C.8.8.6 leaves holes to the creator).
POINT and OPEN contours mark no region and are skipped; an ROI with nothing else is not
a segment.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom.dataset import Dataset
from skimage.draw import polygon2mask

from radflow.annotations.grid import index_to_patient
from radflow.annotations.kinds import read_header
from radflow.annotations.segment import Segment
from radflow.errors import QuarantineError

CLOSED_PLANAR = "CLOSED_PLANAR"


def rtstruct_segments(path: Path, reference: sitk.Image, tolerance_mm: float) -> list[Segment]:
    """Every ROI of the structure set at `path` that has a closed contour, as a mask."""
    ds = read_header(path, whole=True)
    names = {
        _int(roi, "ROINumber"): str(roi.get("ROIName", "") or "")
        for roi in ds.get("StructureSetROISequence") or []
    }
    codes = _codes(ds)
    segments = []
    for item in ds.get("ROIContourSequence") or []:
        number = _int(item, "ReferencedROINumber")
        contours = [
            c
            for c in item.get("ContourSequence") or []
            if str(c.get("ContourGeometricType", "")).upper() == CLOSED_PLANAR
        ]
        if not contours:
            continue
        mask = sitk.GetImageFromArray(contours_mask(contours, reference, tolerance_mm))
        mask.CopyInformation(reference)
        label = names.get(number) or f"ROI {number}"
        segments.append(Segment(number=number, label=label, code=codes.get(number), mask=mask))
    if not segments:
        raise QuarantineError(
            "annotation has no segments", "no ROI of the RTSTRUCT has a closed planar contour"
        )
    return segments


def contours_mask(
    contours: list[Dataset], reference: sitk.Image, tolerance_mm: float
) -> npt.NDArray[np.uint8]:
    """The filled contours as a (z, y, x) uint8 array on the reference's grid."""
    nx, ny, nz = reference.GetSize()
    affine = index_to_patient(reference)
    slice_mm = reference.GetSpacing()[2]
    planes: dict[int, npt.NDArray[np.bool_]] = defaultdict(lambda: np.zeros((ny, nx), bool))
    for contour in contours:
        index = _contour_index(contour, affine)
        if len(index) < 3:
            continue  # fewer than three points enclose nothing
        plane = round(float(np.median(index[:, 2])))
        off = float(np.max(np.abs(index[:, 2] - plane))) * slice_mm
        if off > tolerance_mm:
            raise QuarantineError(
                "RTSTRUCT contour is off the series' slices",
                f"by {off:.2f} mm (tolerance {tolerance_mm:g} mm)",
            )
        if not 0 <= plane < nz:
            beyond = (-plane if plane < 0 else plane - nz + 1) * slice_mm
            raise QuarantineError(
                "RTSTRUCT contour lies outside the series", f"{beyond:.2f} mm beyond its slices"
            )
        _check_in_plane(index, reference, tolerance_mm)
        # polygon2mask takes (row, column) vertices: the image's (y, x).
        planes[plane] ^= polygon2mask((ny, nx), index[:, [1, 0]])
    out = np.zeros((nz, ny, nx), np.uint8)
    for plane, filled in planes.items():
        out[plane] = filled
    return out


def _check_in_plane(index: npt.NDArray[np.floating], reference: sitk.Image, tol: float) -> None:
    """Vertices may reach the outer edge of the border voxels (half a voxel beyond their
    centres) and the tolerance beyond; further out, the fill would be cut off silently."""
    beyond = 0.0
    for axis in (0, 1):
        size, spacing = reference.GetSize()[axis], reference.GetSpacing()[axis]
        low = -0.5 - float(index[:, axis].min())
        high = float(index[:, axis].max()) - (size - 0.5)
        beyond = max(beyond, low * spacing, high * spacing)
    if beyond > tol:
        raise QuarantineError(
            "RTSTRUCT contour lies outside the series", f"{beyond:.2f} mm beyond its edge"
        )


def _contour_index(contour: Dataset, affine: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """The contour's points as continuous (x, y, z) voxel indices of the reference."""
    try:
        points = np.asarray([float(v) for v in contour.get("ContourData") or []]).reshape(-1, 3)
    except ValueError:
        raise QuarantineError(
            "malformed RTSTRUCT contour", "Contour Data is not a list of x, y, z triplets"
        ) from None
    return np.linalg.solve(affine[:3, :3], (points - affine[:3, 3]).T).T


def _codes(ds: Dataset) -> dict[int, str]:
    """ROI number -> "<scheme>:<value>" from RT ROI Identification Code Sequence, when given."""
    codes = {}
    for obs in ds.get("RTROIObservationsSequence") or []:
        items = obs.get("RTROIIdentificationCodeSequence") or []
        if items and "CodeValue" in items[0] and "CodingSchemeDesignator" in items[0]:
            codes[_int(obs, "ReferencedROINumber")] = (
                f"{items[0].CodingSchemeDesignator}:{items[0].CodeValue}"
            )
    return codes


def _int(item: Dataset, keyword: str) -> int:
    try:
        return int(item.get(keyword))
    except (TypeError, ValueError):
        raise QuarantineError(
            "malformed RTSTRUCT", f"{keyword} is missing or not a number"
        ) from None
