"""Read NIfTI files into SimpleITK images in LPS, with the affine nibabel would use.

Which affine: the one nibabel's `get_best_affine` picks, as the NIfTI standard intends:
the sform when sform_code > 0, else the qform when qform_code > 0, else the pixdim-only
fallback. SimpleITK 2.5's reader agrees on nibabel's own test files, but not in general:
with both forms set it takes the qform unless sform_code is 1 (scanner), and it reads no
NIfTI-2. So the image is built here from nibabel: NIfTI is RAS+ and ITK LPS, so the first
two rows of the affine change sign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from radflow.errors import QuarantineError, too_many_voxels
from radflow.limits import DEFAULT_MAX_SERIES_VOXELS

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
SAME_ANGLE = 1e-4  # columns of the affine this close to orthogonal are a rotation, not a shear
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Research formats SimpleITK reads in LPS with their geometry (pyradiomics' cases are NRRD).
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class NiftiGeometry:
    """Grid of a NIfTI image in LPS; `volumes` > 1 for a 4-D (time or channel) series."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 numbers, row-major
    volumes: int
    time_step: float  # pixdim[4], 1.0 when unset


def is_nifti(path: Path) -> bool:
    """By name, as nibabel decides too: .nii or .nii.gz."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _load(path: Path) -> nib.Nifti1Image:
    """The file as nibabel reads it (pixels stay on disk until asked for)."""
    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # nibabel raises several types on bad files; keep only the type
        raise QuarantineError("not NIfTI", type(e).__name__) from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise QuarantineError("not NIfTI", f"a {type(image).__name__}")
    return image


def _shape(image: nib.Nifti1Image) -> tuple[int, int, int, int]:
    """(x, y, z, volumes): 2-D images get one slice, trailing singleton axes go."""
    shape = list(image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) > 4:
        raise QuarantineError("unsupported dimensions", f"a {len(shape)}-D image")
    shape += [1] * (4 - len(shape))
    return shape[0], shape[1], shape[2], shape[3]


def nifti_geometry(image: nib.Nifti1Image) -> NiftiGeometry:
    """LPS grid from nibabel's best affine; NaN, singular and sheared affines are refused."""
    affine = np.asarray(image.header.get_best_affine(), dtype=np.float64)
    if not np.isfinite(affine).all():
        raise QuarantineError("bad affine", "the affine is not finite")
    matrix = affine[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    if spacing.min() <= 0 or abs(np.linalg.det(matrix)) < 1e-12 * float(np.prod(spacing)):
        raise QuarantineError("bad affine", "the affine is singular")
    direction = matrix / spacing
    skew = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if skew > SAME_ANGLE:
        # ITK grids are rotations; a sheared one would be silently mis-placed downstream.
        angle = float(np.degrees(np.arcsin(min(skew, 1.0))))
        raise QuarantineError("sheared affine", f"axes {angle:.2f} degrees from perpendicular")
    lps: npt.NDArray[np.float64] = RAS_TO_LPS @ direction
    origin = RAS_TO_LPS @ affine[:3, 3]
    x, y, z, volumes = _shape(image)
    zooms = image.header.get_zooms()
    step = float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else 1.0
    return NiftiGeometry(
        size=(x, y, z),
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple(float(v) for v in lps.ravel()),
        volumes=volumes,
        time_step=step,
    )


def read_nifti_geometry(path: Path) -> NiftiGeometry:
    """The grid of a NIfTI file, from its header alone."""
    return nifti_geometry(_load(path))


def read_nifti(path: Path, max_voxels: int = DEFAULT_MAX_SERIES_VOXELS) -> sitk.Image:
    """A NIfTI file as a float32 image in LPS (scl_slope/scl_inter applied).

    3-D, or 4-D when the file holds several volumes: the 4th axis keeps pixdim[4] as its
    spacing, and the spatial 3 x 3 block of the direction is the LPS one. A header that
    declares more than `max_voxels` voxels is refused before any voxel is read.
    """
    image = _load(path)
    geometry = nifti_geometry(image)
    dtype = image.get_data_dtype()
    if dtype.fields is not None or not np.issubdtype(dtype, np.number) or dtype.kind == "c":
        raise QuarantineError("unsupported data type", f"voxels of type {dtype}")
    x, y, z, volumes = _shape(image)
    if (voxels := x * y * z * volumes) > max_voxels:
        raise too_many_voxels(voxels, max_voxels)
    # Adding or dropping singleton axes reorders nothing, so nibabel's (Fortran) order stays.
    data = image.get_fdata(dtype=np.float32, caching="unchanged").reshape(x, y, z, volumes)
    if volumes == 1:
        out = sitk.GetImageFromArray(data[..., 0].T)  # numpy (z, y, x) is ITK (x, y, z)
        out.SetSpacing(geometry.spacing)
        out.SetOrigin(geometry.origin)
        out.SetDirection(geometry.direction)
        return out
    out = sitk.GetImageFromArray(data.T, isVector=False)
    out.SetSpacing((*geometry.spacing, geometry.time_step))
    out.SetOrigin((*geometry.origin, 0.0))
    d = np.eye(4)
    d[:3, :3] = np.array(geometry.direction).reshape(3, 3)
    out.SetDirection(tuple(float(v) for v in d.ravel()))
    return out


def read_itk_file(path: Path, max_voxels: int = DEFAULT_MAX_SERIES_VOXELS) -> sitk.Image:
    """An NRRD or MetaImage file in LPS, as SimpleITK reads it; refused as the other readers
    refuse, by its header before any voxel is read, and without ITK's message (it names the
    file's path)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        voxels = math.prod(reader.GetSize()) * reader.GetNumberOfComponents()
        if voxels > max_voxels:
            raise too_many_voxels(voxels, max_voxels)
        return reader.Execute()
    except RuntimeError:
        raise QuarantineError("unreadable image", "SimpleITK could not read it") from None


def read_image(path: Path) -> sitk.Image:
    """A NIfTI file, an NRRD or MetaImage file, a DICOM file, or a folder holding exactly one
    DICOM series, in LPS."""
    from radflow.imaging.read import read_series, split_series

    if is_nifti(path):
        return read_nifti(path)
    if path.is_file() and path.name.lower().endswith(ITK_SUFFIXES):
        return read_itk_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    series = split_series(files)
    if not series:
        raise QuarantineError(
            "no image", "neither NIfTI, NRRD or MetaImage by its name, nor a DICOM image"
        )
    if len(series) != 1:
        raise QuarantineError("several series", f"{len(series)} series where one is expected")
    (paths,) = series.values()
    return read_series(paths)
