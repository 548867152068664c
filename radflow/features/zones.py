"""Zone and dependence texture features: GLSZM, GLDM and NGTDM, as pyradiomics defines them.

Names match pyradiomics (`original_glszm_SmallAreaEmphasis`, ...) and the defaults are
pyradiomics' own: volumetric (3-D) matrices, 26-connectivity for size zones, Chebyshev distance 1
for the dependence and neighbourhood matrices, GLDM coarseness alpha = 0, and fixed-bin-width
grey levels numbered from 1 (see `radflow.features.discretise`).

Conventions shared by the three families:

* Grey levels are the discretised levels 1..n_levels; row ``i - 1`` of every matrix belongs to
  grey level ``i``. Levels absent from the ROI leave a zero row, which changes no feature (the
  formulas weight rows by their counts, and NGTDM only uses levels with p_i > 0).
* Only ROI voxels take part: a neighbour outside the mask is neither a zone member, nor a
  dependent voxel, nor part of a neighbourhood mean (IBSI's convention, and pyradiomics').
* GLDM dependence counts *include the centre voxel*: dependence = 1 + the number of the 26
  neighbours inside the ROI whose level equals the centre's (|delta level| <= alpha = 0). This is
  pyradiomics' convention and also IBSI's NGLDM "j_k" (minimum 1), so a lone voxel has
  dependence 1 and the centre of a uniform 3x3x3 block has 27.
* NGTDM: a voxel without any ROI neighbour has no neighbourhood and is left out of n_i, s_i and
  N_vp (IBSI and pyradiomics agree on this).
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

from radflow.features.discretise import roi_array

__all__ = [
    "gldm_features",
    "gldm_matrix",
    "glszm_features",
    "glszm_matrix",
    "ngtdm_features",
    "ngtdm_matrix",
    "zone_features",
]

_GLSZM = "original_glszm_"
_GLDM = "original_gldm_"
_NGTDM = "original_ngtdm_"

#: pyradiomics' guard inside log2 (np.spacing(1)); zero-probability terms contribute nothing.
_EPS = float(np.spacing(1))

#: pyradiomics' cap on NGTDM coarseness when sum(p_i * s_i) == 0 (a perfectly flat ROI).
_MAX_COARSENESS = 1e6

#: All 26 offsets (dz, dy, dx) at Chebyshev distance 1.
_OFFSETS_26: tuple[tuple[int, int, int], ...] = tuple(
    (dz, dy, dx)
    for dz, dy, dx in itertools.product((-1, 0, 1), repeat=3)
    if (dz, dy, dx) != (0, 0, 0)
)

FloatArray = npt.NDArray[np.float64]


def _check_levels(levels: npt.ArrayLike, n_levels: int) -> npt.NDArray[np.int64]:
    """`levels` as a 3-D int64 array of 0 (outside the ROI) and 1..n_levels; else ValueError."""
    arr = np.asarray(levels)
    if arr.ndim != 3:
        raise ValueError(f"levels must be a 3-D array, got {arr.ndim}-D")
    if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
        raise ValueError("levels must hold integer grey levels")
    arr = arr.astype(np.int64, copy=False)
    if n_levels < 1:
        raise ValueError(f"n_levels must be at least 1, got {n_levels}")
    if arr.size and (arr.min() < 0 or arr.max() > n_levels):
        raise ValueError(f"levels must lie in 0..{n_levels} (0 = outside the ROI)")
    if not (arr > 0).any():
        raise ValueError("the ROI is empty: no voxel has a grey level >= 1")
    return arr


def _shifted(padded: npt.NDArray[np.int64], offset: tuple[int, int, int]) -> npt.NDArray[np.int64]:
    """Each voxel's neighbour at `offset`; `padded` is the levels array with a 1-voxel rim."""
    dz, dy, dx = offset
    nz, ny, nx = (s - 2 for s in padded.shape)
    return padded[1 + dz : 1 + dz + nz, 1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx]


def _matrix_statistics(matrix: npt.ArrayLike, what: str) -> dict[str, float]:
    """The statistics that GLSZM and GLDM features share, from an (Ng, Nj) count matrix.

    Rows are grey levels i = 1..Ng, columns sizes (or dependences) j = 1..Nj. Only the non-zero
    entries are visited: a size zone matrix is mostly empty columns (its width is the largest
    zone), so this is much faster than dense arithmetic and gives the same sums.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"the {what} matrix must be 2-D, got {counts.ndim}-D")
    rows, cols = np.nonzero(counts)
    c = counts[rows, cols]
    total = float(c.sum())
    if not total > 0:
        raise ValueError(f"the {what} matrix is empty")
    i = rows + 1.0
    j = cols + 1.0
    per_j = np.bincount(cols, weights=c)  # zones (voxels) per size (dependence)
    per_i = np.bincount(rows, weights=c)  # zones (voxels) per grey level
    p = c / total
    mu_i = float(np.sum(p * i))
    mu_j = float(np.sum(p * j))
    return {
        "total": total,
        "sum_j": float(np.sum(c * j)),
        "small": float(np.sum(c / j**2)) / total,
        "large": float(np.sum(c * j**2)) / total,
        "gl_nu": float(np.sum(per_i**2)) / total,
        "gl_nu_norm": float(np.sum(per_i**2)) / total**2,
        "j_nu": float(np.sum(per_j**2)) / total,
        "j_nu_norm": float(np.sum(per_j**2)) / total**2,
        "gl_var": float(np.sum(p * (i - mu_i) ** 2)),
        "j_var": float(np.sum(p * (j - mu_j) ** 2)),
        # pyradiomics: -sum p log2(p + eps), eps = np.spacing(1)
        "entropy": float(-np.sum(p * np.log2(p + _EPS))),
        "low_grey": float(np.sum(c / i**2)) / total,
        "high_grey": float(np.sum(c * i**2)) / total,
        "small_low": float(np.sum(c / (i**2 * j**2))) / total,
        "small_high": float(np.sum(c * i**2 / j**2)) / total,
        "large_low": float(np.sum(c * j**2 / i**2)) / total,
        "large_high": float(np.sum(c * i**2 * j**2)) / total,
    }


# ----------------------------------------------------------------------------------- GLSZM


def glszm_matrix(levels: npt.ArrayLike, n_levels: int) -> FloatArray:
    """Grey level size zone matrix, shape (n_levels, largest zone size).

    Element [i - 1, s - 1] counts the zones of grey level i with s voxels; a zone is a
    26-connected component of ROI voxels sharing one grey level (0 in `levels` = outside).
    """
    arr = _check_levels(levels, n_levels)
    structure = np.ones((3, 3, 3), dtype=bool)
    grey: list[npt.NDArray[np.int64]] = []
    sizes: list[npt.NDArray[np.int64]] = []
    # One bounding box per grey level in a single pass; label each level only inside its box.
    for g, box in enumerate(ndimage.find_objects(arr), start=1):
        if box is None:
            continue
        labelled, n_zones = ndimage.label(arr[box] == g, structure=structure)
        zone_sizes = np.bincount(labelled.ravel(), minlength=n_zones + 1)[1:]
        grey.append(np.full(n_zones, g, dtype=np.int64))
        sizes.append(zone_sizes.astype(np.int64))
    g_all = np.concatenate(grey)
    s_all = np.concatenate(sizes)
    n_sizes = int(s_all.max())
    flat = np.bincount((g_all - 1) * n_sizes + (s_all - 1), minlength=n_levels * n_sizes)
    return flat.reshape(n_levels, n_sizes).astype(np.float64)


def glszm_features(matrix: npt.ArrayLike) -> dict[str, float]:
    """pyradiomics' 16 GLSZM features of a size zone matrix from `glszm_matrix`.

    N_z is the number of zones (the matrix sum) and N_p, the number of ROI voxels, is recovered
    from the matrix as sum(size * count).
    """
    st = _matrix_statistics(matrix, "size zone")
    features = {
        "SmallAreaEmphasis": st["small"],
        "LargeAreaEmphasis": st["large"],
        "GrayLevelNonUniformity": st["gl_nu"],
        "GrayLevelNonUniformityNormalized": st["gl_nu_norm"],
        "SizeZoneNonUniformity": st["j_nu"],
        "SizeZoneNonUniformityNormalized": st["j_nu_norm"],
        "ZonePercentage": st["total"] / st["sum_j"],
        "GrayLevelVariance": st["gl_var"],
        "ZoneVariance": st["j_var"],
        "ZoneEntropy": st["entropy"],
        "LowGrayLevelZoneEmphasis": st["low_grey"],
        "HighGrayLevelZoneEmphasis": st["high_grey"],
        "SmallAreaLowGrayLevelEmphasis": st["small_low"],
        "SmallAreaHighGrayLevelEmphasis": st["small_high"],
        "LargeAreaLowGrayLevelEmphasis": st["large_low"],
        "LargeAreaHighGrayLevelEmphasis": st["large_high"],
    }
    return {_GLSZM + name: float(value) for name, value in features.items()}


# ------------------------------------------------------------------------------------ GLDM


def dependence_map(levels: npt.ArrayLike, n_levels: int) -> npt.NDArray[np.int64]:
    """Per-voxel dependence (1 + equal-level ROI neighbours among the 26), 0 outside the ROI."""
    arr = _check_levels(levels, n_levels)
    padded = np.pad(arr, 1)  # 0 rim: never equal to a ROI level
    inside = arr > 0
    dependence = inside.astype(np.int64)  # the centre voxel itself
    for offset in _OFFSETS_26:
        # alpha = 0: a neighbour is dependent when its level equals the centre's; a neighbour
        # outside the ROI has level 0 and so never matches a ROI voxel.
        dependence += _shifted(padded, offset) == arr
    dependence[~inside] = 0
    return dependence


def gldm_matrix(levels: npt.ArrayLike, n_levels: int) -> FloatArray:
    """Grey level dependence matrix, shape (n_levels, largest dependence).

    Element [i - 1, d - 1] counts the ROI voxels of grey level i with dependence d, where d is
    1 (the voxel itself) plus its 26 neighbours inside the ROI with the same grey level; d ranges
    over 1..27. The matrix sums to the number of ROI voxels.
    """
    arr = _check_levels(levels, n_levels)
    dependence = dependence_map(arr, n_levels)
    inside = arr > 0
    g = arr[inside]
    d = dependence[inside]
    n_dep = int(d.max())
    flat = np.bincount((g - 1) * n_dep + (d - 1), minlength=n_levels * n_dep)
    return flat.reshape(n_levels, n_dep).astype(np.float64)


def gldm_features(matrix: npt.ArrayLike) -> dict[str, float]:
    """pyradiomics' 14 GLDM features of a dependence matrix from `gldm_matrix`.

    N_z is the matrix sum, i.e. the number of ROI voxels (one dependence per voxel).
    """
    st = _matrix_statistics(matrix, "dependence")
    features = {
        "SmallDependenceEmphasis": st["small"],
        "LargeDependenceEmphasis": st["large"],
        "GrayLevelNonUniformity": st["gl_nu"],
        "DependenceNonUniformity": st["j_nu"],
        "DependenceNonUniformityNormalized": st["j_nu_norm"],
        "GrayLevelVariance": st["gl_var"],
        "DependenceVariance": st["j_var"],
        "DependenceEntropy": st["entropy"],
        "LowGrayLevelEmphasis": st["low_grey"],
        "HighGrayLevelEmphasis": st["high_grey"],
        "SmallDependenceLowGrayLevelEmphasis": st["small_low"],
        "SmallDependenceHighGrayLevelEmphasis": st["small_high"],
        "LargeDependenceLowGrayLevelEmphasis": st["large_low"],
        "LargeDependenceHighGrayLevelEmphasis": st["large_high"],
    }
    return {_GLDM + name: float(value) for name, value in features.items()}


# ----------------------------------------------------------------------------------- NGTDM


def ngtdm_matrix(levels: npt.ArrayLike, n_levels: int) -> tuple[FloatArray, FloatArray]:
    """Neighbourhood grey tone difference matrix as two vectors of length n_levels: (n, s).

    For every ROI voxel with at least one ROI neighbour among its 26, A = mean level of those
    neighbours; n[i - 1] counts such voxels of grey level i and s[i - 1] sums |i - A| over them.
    """
    arr = _check_levels(levels, n_levels)
    inside = arr > 0
    kernel = np.ones((3, 3, 3), dtype=np.float64)
    kernel[1, 1, 1] = 0.0
    # Levels are 0 outside the ROI, so the sums only see ROI neighbours; integer-valued float
    # sums are exact. Zero padding keeps the image border outside the ROI too.
    level_sum = ndimage.convolve(arr.astype(np.float64), kernel, mode="constant", cval=0.0)
    neighbours = ndimage.convolve(inside.astype(np.float64), kernel, mode="constant", cval=0.0)
    valid = inside & (neighbours > 0)
    g = arr[valid]
    diff = np.abs(g - level_sum[valid] / neighbours[valid])
    n = np.bincount(g - 1, minlength=n_levels).astype(np.float64)
    s = np.bincount(g - 1, weights=diff, minlength=n_levels).astype(np.float64)
    return n, s


def ngtdm_features(n: npt.ArrayLike, s: npt.ArrayLike) -> dict[str, float]:
    """pyradiomics' 5 NGTDM features of (n, s) from `ngtdm_matrix`.

    Degenerate cases follow pyradiomics: coarseness is capped at 1e6 when sum(p*s) = 0;
    contrast and busyness are 0 with a single grey level; strength is 0 when sum(s) = 0.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    s_arr = np.asarray(s, dtype=np.float64)
    n_vp = n_arr.sum()
    if n_vp <= 0:
        nan = float("nan")  # no voxel has a neighbourhood: nothing to describe
        names = ("Coarseness", "Contrast", "Busyness", "Complexity", "Strength")
        return {_NGTDM + name: nan for name in names}
    present = n_arr > 0
    i = np.arange(1, n_arr.size + 1, dtype=np.float64)[present]
    p = n_arr[present] / n_vp
    si = s_arr[present]
    n_gp = int(present.sum())
    ps = p * si
    sum_ps = float(ps.sum())
    sum_s = float(si.sum())
    di = i[:, np.newaxis] - i[np.newaxis, :]
    pi_, pj = p[:, np.newaxis], p[np.newaxis, :]

    coarseness = 1.0 / sum_ps if sum_ps != 0 else _MAX_COARSENESS
    if n_gp > 1:
        contrast = float(np.sum(pi_ * pj * di**2)) / (n_gp * (n_gp - 1)) * sum_s / n_vp
        ip = i * p
        busy_den = float(np.sum(np.abs(ip[:, np.newaxis] - ip[np.newaxis, :])))
        busyness = sum_ps / busy_den if busy_den != 0 else 0.0
    else:
        contrast = 0.0
        busyness = 0.0
    complexity = (
        float(np.sum(np.abs(di) * (ps[:, np.newaxis] + ps[np.newaxis, :]) / (pi_ + pj))) / n_vp
    )
    strength = float(np.sum((pi_ + pj) * di**2)) / sum_s if sum_s != 0 else 0.0
    features = {
        "Coarseness": coarseness,
        "Contrast": contrast,
        "Busyness": busyness,
        "Complexity": complexity,
        "Strength": strength,
    }
    return {_NGTDM + name: float(value) for name, value in features.items()}


# ------------------------------------------------------------------------------ public entry


def zone_features(image: sitk.Image, mask: sitk.Image, bin_width: float) -> dict[str, float]:
    """GLSZM, GLDM and NGTDM features of the ROI `mask != 0`, sorted by name.

    Grey levels come from `radflow.features.discretise.roi_array` (pyradiomics' fixed bin
    width, levels from 1); matrices are volumetric with pyradiomics' default neighbourhoods.
    """
    levels, n_levels = roi_array(image, mask, bin_width)
    features = (
        glszm_features(glszm_matrix(levels, n_levels))
        | gldm_features(gldm_matrix(levels, n_levels))
        | ngtdm_features(*ngtdm_matrix(levels, n_levels))
    )
    return dict(sorted(features.items()))
