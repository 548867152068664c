"""Label maps (NIfTI, NRRD) read with SimpleITK: each distinct nonzero value is a segment.

A label map must be drawn on the series' own grid: same size, and corners within the
tolerance (origin, spacing and direction all show up there, in mm). Its axes may be stored
permuted or flipped (NIfTI writers differ); nothing is resampled.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk

from radflow.annotations.grid import index_to_patient, place_on_grid
from radflow.annotations.segment import Segment
from radflow.errors import QuarantineError


def _read_labels(path: Path) -> tuple[sitk.Image, np.ndarray]:
    """The label map's image and its (z, y, x) whole-number array, or a QuarantineError."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise QuarantineError("unreadable label map", "SimpleITK could not read it") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise QuarantineError(
            "label map is not a 3-D scalar image",
            f"{image.GetDimension()}-D with {image.GetNumberOfComponentsPerPixel()} component(s)",
        )
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise QuarantineError(
                "label map holds non-integer values", "labels must be whole numbers"
            )
        array = array.astype(np.int64)
    return image, array


def write_deidentified_labelmap(source: Path, dest: Path, label: int | None = None) -> int:
    """Write `source`'s label map to `dest` (.nii.gz) as a fresh image: its voxels and its
    geometry (origin, spacing, direction), nothing else; returns its nonzero voxel count.

    With `label`, only that value's voxels are kept, as 1. A fresh image because a header's
    free text can carry PHI (NIfTI descrip, aux_file, intent_name; NRRD key/value fields) and
    SimpleITK copies what it read into what it writes; a new image has no metadata at all."""
    image, array = _read_labels(source)
    if label is not None:
        array = array == label
        if not array.any():
            raise QuarantineError("label not in the label map", f"no voxel has label {label}")
    elif not array.any():
        raise QuarantineError("annotation has no segments", "the label map is all zero")
    if array.min() < 0 or array.max() > np.iinfo(np.uint16).max:
        raise QuarantineError("label map values out of range", "labels must be 0..65535")
    clean = sitk.GetImageFromArray(array.astype(np.uint8 if array.max() <= 255 else np.uint16))
    clean.SetOrigin(image.GetOrigin())
    clean.SetSpacing(image.GetSpacing())
    clean.SetDirection(image.GetDirection())
    sitk.WriteImage(clean, str(dest), useCompression=True)
    return int(np.count_nonzero(array))


def labelmap_segments(path: Path, reference: sitk.Image, tolerance_mm: float) -> list[Segment]:
    """One segment per nonzero label value, in increasing order, on `reference`'s grid."""
    image, array = _read_labels(path)
    volume = hd.Volume(array.T, index_to_patient(image), "PATIENT")
    (placed,) = place_on_grid(volume, reference, tolerance_mm, what="label map")
    values = [int(v) for v in np.unique(array) if v != 0]
    if not values:
        raise QuarantineError("annotation has no segments", "the label map is all zero")
    return [Segment(number=v, label=f"label {v}", code=None, mask=placed == v) for v in values]
