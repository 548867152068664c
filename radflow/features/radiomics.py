"""First-order and shape radiomic features, named and defined as pyradiomics defines them.

Names match pyradiomics (`original_firstorder_Mean`, ...) so that models and reports can be
compared with the literature; the computation uses numpy and SimpleITK instead of pyradiomics to
keep the dependency set small.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from scipy import stats

from radflow.features.discretise import check_grid

_FIRST = "original_firstorder_"
_SHAPE = "original_shape_"


def _binary(mask: sitk.Image) -> sitk.Image:
    """The mask as a 0/1 uint8 image: any non-zero voxel belongs to the region."""
    return sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)


def _voxels(image: sitk.Image, mask: sitk.Image) -> np.ndarray:
    """The image values inside the mask, as float64."""
    check_grid(image, mask)
    inside = sitk.GetArrayViewFromImage(mask) != 0
    if not inside.any():
        raise ValueError("mask is empty: no voxel is non-zero")
    return np.asarray(sitk.GetArrayViewFromImage(image)[inside], dtype=np.float64)


def first_order(image: sitk.Image, mask: sitk.Image, bin_width: float = 25.0) -> dict[str, float]:
    """Intensity statistics of the voxels inside `mask` (pyradiomics' first-order class)."""
    if bin_width <= 0:
        raise ValueError(f"bin_width must be positive, got {bin_width}")
    x = _voxels(image, mask)
    # Fixed-width bins anchored at multiples of bin_width, as pyradiomics bins them; only the
    # counts matter for entropy and uniformity, so the bin index itself is enough.
    _, counts = np.unique(np.floor(x / bin_width), return_counts=True)
    p = counts / counts.sum()
    p10, p25, median, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    mean = float(x.mean())
    features = {
        "Mean": mean,
        "Variance": float(x.var()),
        "Skewness": float(stats.skew(x)) if x.var() > 0 else 0.0,
        "Kurtosis": float(stats.kurtosis(x, fisher=False)) if x.var() > 0 else 0.0,
        "Energy": float(np.sum(x**2)),
        "Entropy": float(-np.sum(p * np.log2(p))),
        "Minimum": float(x.min()),
        "Maximum": float(x.max()),
        "Range": float(x.max() - x.min()),
        "10Percentile": float(p10),
        "90Percentile": float(p90),
        "Median": float(median),
        "InterquartileRange": float(p75 - p25),
        "MeanAbsoluteDeviation": float(np.mean(np.abs(x - mean))),
        "RootMeanSquared": float(np.sqrt(np.mean(x**2))),
        "Uniformity": float(np.sum(p**2)),
    }
    return {_FIRST + name: value for name, value in features.items()}


def shape(mask: sitk.Image) -> dict[str, float]:
    """Size and shape of the non-zero region of `mask`, in physical units (mm, mm², mm³)."""
    if mask.GetDimension() != 3:
        raise ValueError(f"shape features need a 3-D mask, got {mask.GetDimension()}-D")
    stats_filter = sitk.LabelShapeStatisticsImageFilter()
    stats_filter.ComputePerimeterOn()
    stats_filter.Execute(_binary(mask))
    if not stats_filter.HasLabel(1):
        raise ValueError("mask is empty: no voxel is non-zero")
    volume = stats_filter.GetPhysicalSize(1)
    area = stats_filter.GetPerimeter(1)
    # Eigenvalues of the region's coordinate covariance, ascending; pyradiomics derives axis
    # lengths and ratios from these (SimpleITK's own Elongation/Flatness are other ratios).
    # A flat region (one slice thick) has a least moment of zero that rounding can make
    # slightly negative; like pyradiomics, take it as zero rather than fail on its root.
    least, minor, major = (max(m, 0.0) for m in sorted(stats_filter.GetPrincipalMoments(1)))
    features = {
        "VoxelVolume": volume,
        "SurfaceArea": area,
        "Sphericity": math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area if area else 0.0,
        "Elongation": math.sqrt(minor / major) if major > 0 else 0.0,
        "Flatness": math.sqrt(least / major) if major > 0 else 0.0,
        "MajorAxisLength": 4 * math.sqrt(major),
        "MinorAxisLength": 4 * math.sqrt(minor),
        "LeastAxisLength": 4 * math.sqrt(least),
        "EquivalentSphericalDiameter": 2 * stats_filter.GetEquivalentSphericalRadius(1),
    }
    return {_SHAPE + name: float(value) for name, value in features.items()}


def extract(image: sitk.Image, mask: sitk.Image, bin_width: float = 25.0) -> dict[str, float]:
    """Every feature family (first order, shape, GLCM, GLRLM, GLSZM, GLDM, NGTDM), sorted by
    name so that tables and vectors are stable."""
    from radflow.features.texture import texture_features
    from radflow.features.zones import zone_features

    features = (
        first_order(image, mask, bin_width)
        | shape(mask)
        | texture_features(image, mask, bin_width)
        | zone_features(image, mask, bin_width)
    )
    return dict(sorted(features.items()))
