"""First-order and shape radiomic features, named and defined as pyradiomics defines them.

Names match pyradiomics (`original_firstorder_Mean`, ...) so that models and reports can be
compared with the literature; the computation uses numpy, scikit-image and SimpleITK instead of
pyradiomics to keep the dependency set small (pyradiomics ships no wheel for this Python).
The feature set is pyradiomics' default one: every feature its classes enable by default.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from radflow.features.discretise import check_grid, crop_to_roi
from radflow.features.shape import shape_features
from radflow.features.texture import texture_features
from radflow.features.zones import zone_features

_FIRST = "original_firstorder_"
_SHAPE = "original_shape_"


def _voxels(image: sitk.Image, mask: sitk.Image) -> np.ndarray:
    """The image values inside the mask, as float64."""
    check_grid(image, mask)
    inside = sitk.GetArrayViewFromImage(mask) != 0
    if not inside.any():
        raise ValueError("mask is empty: no voxel is non-zero")
    return np.asarray(sitk.GetArrayViewFromImage(image)[inside], dtype=np.float64)


def first_order(
    image: sitk.Image, mask: sitk.Image, bin_width: float = 25.0, voxel_array_shift: float = 0.0
) -> dict[str, float]:
    """Intensity statistics of the voxels inside `mask` (pyradiomics' first-order class).

    `voxel_array_shift` is pyradiomics' `voxelArrayShift`: a constant added to the intensities
    for Energy, TotalEnergy and RootMeanSquared only (pyradiomics' default, and radflow's, is
    0; its published baseline used 2000).
    """
    if bin_width <= 0:
        raise ValueError(f"bin_width must be positive, got {bin_width}")
    x = _voxels(image, mask)
    # Fixed-width bins anchored at multiples of bin_width, as pyradiomics bins them; only the
    # counts matter for entropy and uniformity, so the bin index itself is enough.
    _, counts = np.unique(np.floor(x / bin_width), return_counts=True)
    p = counts / counts.sum()
    p10, p25, median, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    mean = float(x.mean())
    # Central moments by hand (biased, as pyradiomics): scipy.stats costs seconds to import.
    m2, m3, m4 = (float(np.mean((x - mean) ** k)) for k in (2, 3, 4))
    shifted = x + voxel_array_shift
    energy = float(np.sum(shifted**2))
    robust = x[(x >= p10) & (x <= p90)]  # the 10th-90th percentile range, both ends included
    features = {
        "Mean": mean,
        "Variance": m2,
        "Skewness": float(m3 / m2**1.5) if m2 > 0 else 0.0,
        "Kurtosis": float(m4 / m2**2) if m2 > 0 else 0.0,  # not the excess kurtosis
        "Energy": energy,
        "TotalEnergy": energy * math.prod(image.GetSpacing()),
        "Entropy": float(-np.sum(p * np.log2(p))),
        "Minimum": float(x.min()),
        "Maximum": float(x.max()),
        "Range": float(x.max() - x.min()),
        "10Percentile": float(p10),
        "90Percentile": float(p90),
        "Median": float(median),
        "InterquartileRange": float(p75 - p25),
        "MeanAbsoluteDeviation": float(np.mean(np.abs(x - mean))),
        "RobustMeanAbsoluteDeviation": float(np.mean(np.abs(robust - robust.mean()))),
        "RootMeanSquared": float(np.sqrt(np.mean(shifted**2))),
        "Uniformity": float(np.sum(p**2)),
    }
    return {_FIRST + name: value for name, value in features.items()}


def shape(mask: sitk.Image) -> dict[str, float]:
    """Size and shape of the non-zero region of `mask`, in physical units (mm, mm², mm³),
    from its marching-cubes mesh and its voxels (`radflow.features.shape`)."""
    if mask.GetDimension() != 3:
        raise ValueError(f"shape features need a 3-D mask, got {mask.GetDimension()}-D")
    inside = sitk.GetArrayViewFromImage(mask) != 0
    if not inside.any():
        raise ValueError("mask is empty: no voxel is non-zero")
    spacing = tuple(float(v) for v in reversed(mask.GetSpacing()))  # numpy's (z, y, x)
    features = shape_features(inside, (spacing[0], spacing[1], spacing[2]))
    return {_SHAPE + name: float(value) for name, value in features.items()}


def extract(
    image: sitk.Image, mask: sitk.Image, bin_width: float = 25.0, voxel_array_shift: float = 0.0
) -> dict[str, float]:
    """Every feature family (first order, shape, GLCM, GLRLM, GLSZM, GLDM, NGTDM), sorted by
    name so that tables and vectors are stable.

    Every family reads the ROI's bounding box only (`crop_to_roi`: the same values, to the
    bit): a 20 mm nodule in a 512 x 512 x 300 CT is a 30 x 30 x 16 box. The families are
    imported with this module, not on the first call, which would pay scipy's and
    scikit-image's imports."""
    image, mask = crop_to_roi(image, mask)
    features = (
        first_order(image, mask, bin_width, voxel_array_shift)
        | shape(mask)
        | texture_features(image, mask, bin_width)
        | zone_features(image, mask, bin_width)
    )
    return dict(sorted(features.items()))
