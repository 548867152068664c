"""An image and a region of interest from files, for feature extraction outside the lake.

`radflow features IMAGE --mask MASK` reads through here. Images are NIfTI (.nii, .nii.gz),
NRRD (.nrrd, .nhdr) or a folder holding one DICOM series; a mask is any of those holding a
label map, or a DICOM SEG or RTSTRUCT file (read by `radflow.annotations`, whose segments
are numbered: SEG segment number, RTSTRUCT ROI number). Each gives the same thing: a 0/1
mask on the image's own grid.

A mask must lie on the image's grid: the same size, and every voxel centre within
`GRID_TOLERANCE_MM` of the image's (this one figure covers origin, spacing and direction). A
mask on another grid is refused with the offset, never resampled: resampling a label map
changes the region the features describe. Messages carry numbers only, never paths or
header values (they may name a patient).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radflow.errors import NotFoundError, QuarantineError
from radflow.features.discretise import roi_box

__all__ = ["GRID_TOLERANCE_MM", "crop_to_mask", "grid_offset_mm", "load_image", "load_mask"]

#: Largest distance (mm) between a mask voxel's centre and the image voxel's it stands for.
#: Far below any voxel, above the rounding of NIfTI's float32 and DICOM's decimal strings.
GRID_TOLERANCE_MM = 0.01

_NIFTI = (".nii", ".nii.gz")
_NRRD = (".nrrd", ".nhdr")


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def load_image(path: Path) -> sitk.Image:
    """A 3-D scalar image from a NIfTI or NRRD file or a one-series DICOM folder, in LPS."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError("nothing at the given path", hint="give a .nii(.gz), .nrrd or folder")
    if path.is_dir():
        from radflow.imaging.read import read_series, split_series

        series = split_series(sorted(p for p in path.rglob("*") if p.is_file()))
        if len(series) != 1:
            raise QuarantineError(
                "not one DICOM series", f"the folder holds {len(series)} image series"
            )
        (files,) = series.values()
        image = read_series(files)
    elif _has_suffix(path, _NIFTI):
        from radflow.imaging.nifti import read_nifti

        image = read_nifti(path)
    elif _has_suffix(path, _NRRD):
        try:
            image = sitk.ReadImage(str(path))  # ITK's NRRD reader gives LPS, as radflow uses
        except RuntimeError:
            raise QuarantineError("unreadable NRRD", "ITK could not read the file") from None
    else:
        raise QuarantineError(
            "unsupported file type", "give NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or a folder"
        )
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise QuarantineError(
            "not a 3-D scalar image",
            f"{image.GetDimension()}-D, {image.GetNumberOfComponentsPerPixel()} component(s)",
        )
    return image


def grid_offset_mm(image: sitk.Image, other: sitk.Image) -> float:
    """Largest distance (mm) between the centres of corresponding corner voxels of two grids
    of one size; corners bound every voxel, since index -> point is affine."""
    size = image.GetSize()
    corners = itertools.product(*((0, n - 1) for n in size))
    return max(
        float(
            np.linalg.norm(
                np.subtract(
                    image.TransformIndexToPhysicalPoint(corner),
                    other.TransformIndexToPhysicalPoint(corner),
                )
            )
        )
        for corner in corners
    )


def _on_grid(mask: sitk.Image, image: sitk.Image) -> sitk.Image:
    if mask.GetDimension() != image.GetDimension() or mask.GetSize() != image.GetSize():
        raise QuarantineError(
            "mask not on the image's grid",
            f"size {'x'.join(map(str, mask.GetSize()))} where the image is "
            f"{'x'.join(map(str, image.GetSize()))}",
        )
    offset = grid_offset_mm(image, mask)
    if offset > GRID_TOLERANCE_MM:
        shift = np.subtract(mask.GetOrigin(), image.GetOrigin())
        raise QuarantineError(
            "mask not on the image's grid",
            f"its voxels lie up to {offset:.3f} mm from the image's (origin offset "
            f"{', '.join(f'{v:.3f}' for v in shift)} mm; tolerance {GRID_TOLERANCE_MM} mm)",
        )
    return mask


def _labels(values: np.ndarray) -> list[int]:
    present = np.unique(values[values != 0])  # sorting only the region: a CT has 10^7 voxels
    if not np.all(np.isfinite(present)) or not np.array_equal(present, np.round(present)):
        raise QuarantineError("not a label map", "the mask holds values that are not whole numbers")
    return [int(v) for v in present]


def _segment_mask(path: Path, image: sitk.Image, number: int | None) -> sitk.Image:
    """Segment `number` of the SEG or RTSTRUCT at `path` (default: the only one) on
    `image`'s grid. The annotation readers place it by its frames' or contours' positions,
    within their tolerance; nothing is resampled."""
    from radflow.annotations import segments_on_grid

    segments = segments_on_grid(path, image)
    listed = ", ".join(f"{s.number} ({s.label})" for s in segments)
    if number is None:
        if len(segments) > 1:
            raise QuarantineError(
                "several segments in the mask", f"segments {listed}; choose one (--label N)"
            )
        (chosen,) = segments
    else:
        found = [s for s in segments if s.number == number]
        if not found:
            raise QuarantineError(
                "segment not in the mask", f"no segment {number}; the mask holds {listed}"
            )
        (chosen,) = found
    if chosen.voxels == 0:
        raise QuarantineError("mask is empty", "the segment covers no voxel of the image")
    mask = sitk.Cast(chosen.mask, sitk.sitkUInt8)
    mask.CopyInformation(image)
    return mask


def load_mask(path: Path, image: sitk.Image, label: int | None = None) -> sitk.Image:
    """The region of `label` (default: every non-zero voxel, if the mask holds one label) of
    the label map at `path`, as a 0/1 uint8 mask carrying the image's geometry exactly. For
    a DICOM SEG or RTSTRUCT, `label` is the segment number (default: the only segment)."""
    from radflow.annotations import annotation_kind

    if Path(path).is_file() and annotation_kind(Path(path)) in ("seg", "rtstruct"):
        return _segment_mask(Path(path), image, label)
    labels_image = _on_grid(load_image(path), image)
    values = sitk.GetArrayViewFromImage(labels_image)
    labels = _labels(values)
    if not labels:
        raise QuarantineError("mask is empty", "no voxel of the mask is non-zero")
    if label is None:
        if len(labels) > 1:
            raise QuarantineError(
                "several labels in the mask",
                f"labels {', '.join(map(str, labels))}; choose one (--label N)",
            )
        inside = values != 0
    else:
        if label not in labels:
            raise QuarantineError(
                "label not in the mask",
                f"no voxel has label {label}; the mask holds {', '.join(map(str, labels))}",
            )
        inside = values == label
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def crop_to_mask(
    image: sitk.Image, mask: sitk.Image, pad: int = 1
) -> tuple[sitk.Image, sitk.Image]:
    """Both images cut to the mask's bounding box plus `pad` voxels (within the image).

    No feature depends on the voxels outside the box (`radflow.features.discretise.crop_to_roi`,
    which `extract` applies itself, says why), so this only saves time and memory."""
    try:
        box = roi_box(sitk.GetArrayViewFromImage(mask))[::-1]  # ITK's (x, y, z) order
    except ValueError:
        raise QuarantineError("mask is empty", "no voxel of the mask is non-zero") from None
    size = mask.GetSize()
    lower = [max(b.start - pad, 0) for b in box]
    upper = [min(b.stop + pad, n) for b, n in zip(box, size, strict=True)]
    extent = [hi - lo for lo, hi in zip(lower, upper, strict=True)]
    return sitk.RegionOfInterest(image, extent, lower), sitk.RegionOfInterest(mask, extent, lower)
