"""Put an annotation's voxels onto a reference series' grid, or say by how many mm it is off.

The annotation arrives as a highdicom `Volume` (a SEG's frames, a label map's voxels). It
may be stored with its axes permuted or flipped relative to the series (a SEG is stacked
slice-first, a NIfTI from another converter may run right-to-left); that is exact and
allowed. Anything else (a rotation, another spacing, a shift) would need resampling,
which would invent or move boundary voxels, so it is measured in millimetres at the
annotation's corners and refused beyond the tolerance. Within it, the voxels are snapped
to the series' grid and highdicom's `match_geometry` permutes, flips, pads and crops them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from radflow.errors import QuarantineError

Matrix = npt.NDArray[np.floating]


def index_to_patient(image: sitk.Image) -> Matrix:
    """The 4x4 affine from SimpleITK's (x, y, z) voxel index to LPS millimetres."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return affine


def reference_geometry(reference: sitk.Image) -> hd.VolumeGeometry:
    """The reference as highdicom sees it, axes in SimpleITK's (x, y, z) order."""
    return hd.VolumeGeometry(index_to_patient(reference), reference.GetSize(), "PATIENT")


def offset_from_grid_mm(reference: sitk.Image, point: Sequence[float]) -> float:
    """How far a point lies from the nearest voxel centre of the reference, in mm."""
    affine = index_to_patient(reference)
    index = np.linalg.solve(affine[:3, :3], np.asarray(point, dtype=np.float64) - affine[:3, 3])
    return float(np.linalg.norm(affine[:3, :3] @ (index - np.round(index))))


def place_on_grid(
    volume: hd.Volume,
    reference: sitk.Image,
    tolerance_mm: float,
    *,
    what: str,
    slice_axis: int | None = None,
) -> list[sitk.Image]:
    """The volume's channels as images on the reference's grid, values as they were.

    Every axis must cover the reference's whole extent along the matching axis, except
    `slice_axis` (a SEG's frames are a subset of the series' slices, possibly every k-th):
    there the volume may start at any slice. A nonzero voxel of the annotation that would
    fall outside the reference is a QuarantineError, never cut silently."""
    ref_affine = index_to_patient(reference)
    ref_size = np.array(reference.GetSize())
    vol_affine: Matrix = np.array(volume.affine, dtype=np.float64)
    vol_shape = np.array(volume.spatial_shape)
    if slice_axis is not None and vol_shape[slice_axis] == 1:
        vol_affine = _unit_slice_step(vol_affine, ref_affine, slice_axis)
    to_ref = np.linalg.solve(ref_affine, vol_affine)  # volume index -> reference index
    perm = _signed_permutation(to_ref[:3, :3], what)
    step = np.ones(3, dtype=np.int64)
    if slice_axis is not None:
        row = int(np.argmax(np.abs(perm[:, slice_axis])))
        step[slice_axis] = max(1, round(abs(to_ref[row, slice_axis])))
    expected: Matrix = np.eye(4)
    expected[:3, :3] = perm * step  # columns scaled by each volume axis' step
    for axis in range(3):
        row = int(np.argmax(np.abs(perm[:, axis])))
        if axis == slice_axis:
            expected[row, 3] = round(to_ref[row, 3])
            continue
        if vol_shape[axis] != ref_size[row]:
            along = [vol_shape[int(np.argmax(np.abs(perm[r, :])))] for r in range(3)]
            raise QuarantineError(
                f"{what} is not on the series' grid",
                f"size {_size(along)} where the series has {_size(ref_size)}",
            )
        expected[row, 3] = 0 if perm[row, axis] > 0 else ref_size[row] - 1
    offset = _corner_offset_mm(to_ref, expected, vol_shape, ref_affine)
    if offset > tolerance_mm:
        raise QuarantineError(
            f"{what} is off the series' grid",
            f"by {offset:.2f} mm (tolerance {tolerance_mm:g} mm)",
        )
    array = np.asarray(volume.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if slice_axis is not None and step[slice_axis] > 1:
        array, expected = _spread_slices(array, expected, slice_axis, int(step[slice_axis]))
    geometry = reference_geometry(reference)
    images = []
    for channel in range(array.shape[3]):
        snapped = hd.Volume(array[..., channel], ref_affine @ expected, "PATIENT")
        placed = np.asarray(snapped.match_geometry(geometry).array)
        total = int(np.count_nonzero(array[..., channel]))
        lost = total - int(np.count_nonzero(placed))
        if lost:
            raise QuarantineError(
                f"{what} extends beyond the series",
                f"{lost} of {total} voxels lie outside its volume",
            )
        # highdicom's (i, j, k) are SimpleITK's (x, y, z): numpy wants them reversed.
        image = sitk.GetImageFromArray(np.ascontiguousarray(placed.T))
        image.CopyInformation(reference)
        images.append(image)
    return images


def _signed_permutation(linear: Matrix, what: str) -> Matrix:
    """The permutation-with-flips nearest to `linear` (volume axes -> reference axes), or a
    QuarantineError when two of the annotation's axes point along one of the series'."""
    units = linear / np.linalg.norm(linear, axis=0)
    perm = np.zeros((3, 3))
    for axis in range(3):
        row = int(np.argmax(np.abs(units[:, axis])))
        perm[row, axis] = math.copysign(1.0, units[row, axis])
    if not np.array_equal(np.abs(perm).sum(axis=1), np.ones(3)):
        worst = max(float(np.degrees(np.arccos(np.max(np.abs(units[:, a]))))) for a in range(3))
        raise QuarantineError(
            f"{what} is not aligned with the series' grid", f"axes differ by {worst:.1f} degrees"
        )
    return perm


def _corner_offset_mm(to_ref: Matrix, expected: Matrix, shape: Matrix, ref_affine: Matrix) -> float:
    """The largest distance, in mm, between where the volume's corner voxels are and where
    they would be on the grid: one figure for shift, rotation and spacing together."""
    worst = 0.0
    for corner in itertools.product(*[(0, int(n) - 1) for n in shape]):
        index = np.array([*corner, 1.0])
        gap = (to_ref @ index - expected @ index)[:3]
        worst = max(worst, float(np.linalg.norm(ref_affine[:3, :3] @ gap)))
    return worst


def _unit_slice_step(vol_affine: Matrix, ref_affine: Matrix, axis: int) -> Matrix:
    """A single frame has no slice spacing of its own: give it the series' along that axis."""
    out = vol_affine.copy()
    column = out[:3, axis]
    unit = column / np.linalg.norm(column)
    ref_units = ref_affine[:3, :3] / np.linalg.norm(ref_affine[:3, :3], axis=0)
    row = int(np.argmax(np.abs(ref_units.T @ unit)))
    out[:3, axis] = unit * np.linalg.norm(ref_affine[:3, row])
    return out


def _spread_slices(
    array: npt.NDArray[np.generic], expected: Matrix, axis: int, step: int
) -> tuple[npt.NDArray[np.generic], Matrix]:
    """Frames on every `step`-th slice of the series, as a volume on every slice (zeros between)."""
    shape = list(array.shape)
    shape[axis] = (shape[axis] - 1) * step + 1
    spread = np.zeros(shape, dtype=array.dtype)
    index: list[slice] = [slice(None)] * array.ndim
    index[axis] = slice(None, None, step)
    spread[tuple(index)] = array
    out = expected.copy()
    out[:3, axis] = expected[:3, axis] / step
    return spread, out


def _size(shape: Sequence[int] | npt.NDArray[np.int64]) -> str:
    return " x ".join(str(int(n)) for n in shape)
