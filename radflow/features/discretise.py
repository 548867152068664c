"""Grey-level discretisation and ROI extraction shared by the texture feature families.

The rules follow pyradiomics' defaults: fixed-bin-width discretisation with bins anchored at
multiples of the bin width, grey levels numbered from 1, and texture matrices built in array
index space (z, y, x) over the 13 unique 3-D neighbour offsets at distance 1.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

__all__ = ["DIRECTIONS_3D", "crop_to_roi", "discretise", "roi_array", "roi_box"]

#: The 13 unique 3-D offsets (dz, dy, dx) at Chebyshev distance 1; the other 13 of the 26-voxel
#: neighbourhood are their negatives. Offsets are in numpy index order (z, y, x), i.e. the order
#: of `sitk.GetArrayFromImage`.
DIRECTIONS_3D: tuple[tuple[int, int, int], ...] = (
    (0, 0, 1),
    (0, 1, 0),
    (0, 1, 1),
    (0, 1, -1),
    (1, 0, 0),
    (1, 0, 1),
    (1, 0, -1),
    (1, 1, 0),
    (1, -1, 0),
    (1, 1, 1),
    (1, 1, -1),
    (1, -1, 1),
    (1, -1, -1),
)


def check_grid(image: sitk.Image, mask: sitk.Image) -> None:
    """Refuse an image/mask pair on different grids: voxels would be silently misaligned."""
    for what, a, b in (
        ("size", image.GetSize(), mask.GetSize()),
        ("spacing", image.GetSpacing(), mask.GetSpacing()),
        ("origin", image.GetOrigin(), mask.GetOrigin()),
        ("direction", image.GetDirection(), mask.GetDirection()),
    ):
        if len(a) != len(b) or not np.allclose(a, b, rtol=0.0, atol=1e-4):
            raise ValueError(f"image and mask differ in {what}: {a} vs {b}")


def roi_box(mask: npt.ArrayLike) -> tuple[slice, ...]:
    """The bounding box of the non-zero voxels of `mask`, one slice per axis (numpy's order).

    One pass over the whole array finds the first axis's extent; the other axes are found in
    the slab it bounds, which for a nodule in a CT is a few percent of the volume (np.nonzero
    would list every voxel's index first: 10x slower on a 512 x 512 x 300 mask)."""
    arr = np.asarray(mask)
    if arr.ndim == 0 or arr.size == 0:
        raise ValueError("mask is empty: no voxel is non-zero")
    hits = np.flatnonzero(arr.reshape(arr.shape[0], -1).any(axis=1))
    if not hits.size:
        raise ValueError("mask is empty: no voxel is non-zero")
    first = slice(int(hits[0]), int(hits[-1]) + 1)
    if arr.ndim == 1:
        return (first,)
    return (first, *roi_box(arr[first].any(axis=0)))


def crop_to_roi(image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """Both images cut to the bounding box of the mask's non-zero voxels, without margin.

    No feature radflow computes reads a voxel outside the ROI: first order takes the ROI's
    values, shape its voxels, and every texture matrix counts only pairs, runs, zones and
    neighbourhoods of ROI voxels (a neighbour outside the mask is left out, as in IBSI and
    pyradiomics). So the features of the crop are those of the whole image, to the bit: the
    ROI's voxels come in the same order. (Filtered images, LoG or wavelet, which radflow does
    not compute, would need a margin of their kernel's reach.)"""
    check_grid(image, mask)
    box = roi_box(sitk.GetArrayViewFromImage(mask))[::-1]  # ITK's (x, y, z) order
    index = [b.start for b in box]
    size = [b.stop - b.start for b in box]
    return sitk.RegionOfInterest(image, size, index), sitk.RegionOfInterest(mask, size, index)


def discretise(values: npt.ArrayLike, bin_width: float) -> npt.NDArray[np.int64]:
    """Fixed-bin-width grey levels of `values`, numbered from 1 (pyradiomics' rule).

    level = floor(x / bin_width) - floor(min(x) / bin_width) + 1, so the bins are anchored at
    multiples of `bin_width` (not at the minimum) and the lowest level present is always 1.
    The result has the shape of `values`.
    """
    if not bin_width > 0:
        raise ValueError(f"bin_width must be positive, got {bin_width}")
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.int64)
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite to be discretised")
    bins = np.floor(x / bin_width)
    levels: npt.NDArray[np.int64] = (bins - bins.min() + 1).astype(np.int64)
    return levels


def roi_array(
    image: sitk.Image, mask: sitk.Image, bin_width: float
) -> tuple[npt.NDArray[np.int64], int]:
    """Discretised grey levels of the ROI, cropped to the ROI's bounding box.

    Returns `(levels, n_levels)`: `levels` is a 3-D int64 array in (z, y, x) order holding the
    grey level (1..n_levels) of every ROI voxel and 0 for voxels outside the mask; `n_levels` is
    the highest grey level present. Any non-zero mask voxel belongs to the ROI. A 2-D image is
    treated as a single slice.
    """
    check_grid(image, mask)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("image must be scalar (one component per voxel)")
    img = sitk.GetArrayViewFromImage(image)
    inside = sitk.GetArrayViewFromImage(mask)
    if img.ndim == 2:
        img, inside = img[np.newaxis], inside[np.newaxis]
    if img.ndim != 3:
        raise ValueError(f"need a 2-D or 3-D image, got {img.ndim}-D")
    box = roi_box(inside)  # cut before converting: a CT's float64 copy is 600 MB
    img, inside = np.asarray(img[box], dtype=np.float64), inside[box] != 0
    levels = np.zeros(img.shape, dtype=np.int64)
    levels[inside] = discretise(img[inside], bin_width)
    return levels, int(levels.max())
