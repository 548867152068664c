"""GLCM and GLRLM texture features, named and aggregated as pyradiomics does by default.

Settings (pyradiomics defaults): 3-D, the 13 unique directions of `DIRECTIONS_3D` at distance 1,
a symmetric GLCM, fixed-bin-width discretisation (`radflow.features.discretise`), and features
computed on each direction's matrix separately and then averaged over the directions (IBSI
aggregation "3D, averaged", tag suffix `3D_avg`). Directions without a single voxel pair inside
the ROI (e.g. the through-plane directions of a one-slice ROI) are left out of the average, as
pyradiomics leaves them out.

Definitions follow pyradiomics (which follows IBSI, Zwanenburg et al.) with these notes:

* Grey levels are the discretised levels 1..Ng, with Ng the highest level present. pyradiomics
  drops empty grey levels from its matrices but keeps the real level values as i and j; keeping
  the empty rows and columns, as done here, gives identical values.
* pyradiomics adds eps = 2.2e-16 inside every logarithm (log2(p + eps)); done here too, so values
  match pyradiomics to ~1e-15; IBSI uses 0 * log2(0) = 0 instead (same values at 3 digits).
* `Correlation` is set to 1 where a direction's GLCM has zero variance (pyradiomics' choice; IBSI
  leaves it undefined). `Imc1` is HXY - HXY1 (0 up to eps) where max(HX, HY) = 0, and `Imc2`
  is 0 where 1 - exp(-2 (HXY2 - HXY)) would be negative.
* `Idmn` and `Idn` normalise by Ng (the highest grey level), as pyradiomics does; IBSI normalises
  by the number of discretisation levels, which is the same number for a fixed-bin-width
  discretisation whose lowest level is 1.
* Naming vs IBSI: JointEnergy = IBSI "angular second moment"; SumSquares = IBSI "joint variance";
  ClusterTendency = IBSI "sum variance"; MaximumProbability = IBSI "joint maximum";
  Id/Idn/Idm/Idmn = IBSI inverse difference (normalised) / inverse difference moment
  (normalised); RunEntropy = IBSI "run length entropy".
* Discretisation differs from IBSI's fixed bin size: pyradiomics anchors bins at multiples of the
  bin width (floor(x / w) - floor(min / w) + 1), IBSI at the ROI minimum (floor((x - min) / w) + 1).
  The two agree when min is a multiple of w (e.g. the IBSI digital phantom with w = 1).
* pyradiomics also averages per-direction values (`3D_avg`); the IBSI "3D, merged" values
  (`3D_comb`) are different numbers and are not what this module reports.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from radflow.features.discretise import DIRECTIONS_3D, roi_array

__all__ = [
    "GLCM_FEATURES",
    "GLRLM_FEATURES",
    "glcm_features",
    "glcm_matrices",
    "glrlm_features",
    "glrlm_matrices",
    "texture_features",
]

_GLCM = "original_glcm_"
_GLRLM = "original_glrlm_"
_EPS = float(np.spacing(1))

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

GLCM_FEATURES: tuple[str, ...] = (
    "Autocorrelation",
    "JointAverage",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "JointEnergy",
    "JointEntropy",
    "Imc1",
    "Imc2",
    "Idm",
    "MCC",
    "Idmn",
    "Id",
    "Idn",
    "InverseVariance",
    "MaximumProbability",
    "SumAverage",
    "SumEntropy",
    "SumSquares",
)

GLRLM_FEATURES: tuple[str, ...] = (
    "ShortRunEmphasis",
    "LongRunEmphasis",
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "RunLengthNonUniformity",
    "RunLengthNonUniformityNormalized",
    "RunPercentage",
    "GrayLevelVariance",
    "RunVariance",
    "RunEntropy",
    "LowGrayLevelRunEmphasis",
    "HighGrayLevelRunEmphasis",
    "ShortRunLowGrayLevelEmphasis",
    "ShortRunHighGrayLevelEmphasis",
    "LongRunLowGrayLevelEmphasis",
    "LongRunHighGrayLevelEmphasis",
)


def _check_levels(levels: npt.ArrayLike, n_levels: int) -> npt.NDArray[np.int32]:
    """`levels` as a 3-D int32 array padded by one 0 voxel on every side, after checks."""
    arr = np.asarray(levels)
    if arr.ndim != 3:
        raise ValueError(f"levels must be a 3-D array, got {arr.ndim}-D")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"levels must be integers, got {arr.dtype}")
    if n_levels < 1:
        raise ValueError(f"n_levels must be at least 1, got {n_levels}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > n_levels):
        raise ValueError(f"levels must lie in 0..{n_levels} (0 = outside the ROI)")
    return np.pad(arr.astype(np.int32, copy=False), 1)


def _shifted(padded: npt.NDArray[np.int32], d: tuple[int, int, int]) -> npt.NDArray[np.int32]:
    """The view of `padded` whose voxel at each core position p holds padded[p + d]."""
    core = tuple(slice(1 + k, padded.shape[a] - 1 + k) for a, k in enumerate(d))
    return padded[core]


def glcm_matrices(levels: npt.ArrayLike, n_levels: int) -> FloatArray:
    """Symmetric grey-level co-occurrence counts, shape (13, Ng, Ng), one per direction.

    `levels` holds grey levels 1..n_levels inside the ROI and 0 outside (see `roi_array`).
    Entry [a, i-1, j-1] counts the ordered voxel pairs (p, q), both in the ROI, with
    q = p ± DIRECTIONS_3D[a], level(p) = i and level(q) = j; each matrix is therefore symmetric
    and sums to twice the number of neighbour pairs along its direction. Counts, not
    probabilities.
    """
    padded = _check_levels(levels, n_levels)
    ng = int(n_levels)
    centre = _shifted(padded, (0, 0, 0))
    out = np.empty((len(DIRECTIONS_3D), ng, ng), dtype=np.float64)
    for a, d in enumerate(DIRECTIONS_3D):
        neighbour = _shifted(padded, d)
        both = (centre > 0) & (neighbour > 0)
        codes = (centre[both].astype(np.int64) - 1) * ng + (neighbour[both] - 1)
        counts = np.bincount(codes, minlength=ng * ng).reshape(ng, ng)
        out[a] = counts + counts.T
    return out


def _average(per_direction: dict[str, FloatArray], prefix: str) -> dict[str, float]:
    return {prefix + name: float(np.mean(v)) for name, v in per_direction.items()}


def glcm_features(levels: npt.ArrayLike, n_levels: int) -> dict[str, float]:
    """The 24 pyradiomics GLCM features (`original_glcm_*`), averaged over the directions.

    Takes the same `levels`/`n_levels` as `glcm_matrices`. Directions without any pair are left
    out; if no direction has a pair (an ROI of one voxel), every feature is NaN.
    """
    counts = glcm_matrices(levels, n_levels)
    totals = counts.sum(axis=(1, 2))
    counts = counts[totals > 0]
    if counts.shape[0] == 0:
        return {_GLCM + name: float("nan") for name in GLCM_FEATURES}
    p = counts / counts.sum(axis=(1, 2), keepdims=True)  # (A, Ng, Ng)
    n_dir, ng, _ = p.shape
    grey = np.arange(1, ng + 1, dtype=np.float64)
    i = grey[:, None]
    j = grey[None, :]

    px = p.sum(axis=2)  # (A, Ng), marginal over j
    py = p.sum(axis=1)  # (A, Ng), marginal over i
    ux = (px * grey).sum(axis=1)  # (A,)
    uy = (py * grey).sum(axis=1)
    sigx = np.sqrt((px * (grey - ux[:, None]) ** 2).sum(axis=1))
    sigy = np.sqrt((py * (grey - uy[:, None]) ** 2).sum(axis=1))

    # p_{x+y}(k), k = 2..2Ng, and p_{x-y}(k), k = 0..Ng-1, per direction.
    sum_index = (np.add.outer(np.arange(ng), np.arange(ng))).ravel()
    diff_index = np.abs(np.subtract.outer(np.arange(ng), np.arange(ng))).ravel()
    flat = p.reshape(n_dir, -1)
    p_sum: FloatArray = np.stack(
        [np.bincount(sum_index, weights=row, minlength=2 * ng - 1) for row in flat]
    ).astype(np.float64)
    p_diff: FloatArray = np.stack(
        [np.bincount(diff_index, weights=row, minlength=ng) for row in flat]
    ).astype(np.float64)
    k_sum = np.arange(2, 2 * ng + 1, dtype=np.float64)
    k_diff = np.arange(0, ng, dtype=np.float64)

    def entropy(q: FloatArray, axes: tuple[int, ...]) -> FloatArray:
        return np.asarray(-(q * np.log2(q + _EPS)).sum(axis=axes), dtype=np.float64)

    hx = entropy(px, (1,))
    hy = entropy(py, (1,))
    hxy = entropy(p, (1, 2))
    pxpy = px[:, :, None] * py[:, None, :]
    hxy1 = -(p * np.log2(pxpy + _EPS)).sum(axis=(1, 2))
    hxy2 = entropy(pxpy, (1, 2))

    ij = (i * j)[None]
    centred = (i + j)[None] - ux[:, None, None] - uy[:, None, None]
    autocorrelation = (p * ij).sum(axis=(1, 2))
    sig = sigx * sigy
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.where(
            sig > 0, (autocorrelation - ux * uy) / (sig + _EPS), 1.0
        )  # pyradiomics: ((sum p ij) - ux uy) / (sigx sigy + eps), 1 where sigx sigy = 0
    hmax = np.maximum(hx, hy)
    imc1 = np.where(hmax != 0, (hxy - hxy1) / np.where(hmax != 0, hmax, 1.0), hxy - hxy1)
    imc2 = np.sqrt(np.clip(1.0 - np.exp(-2.0 * (hxy2 - hxy)), 0.0, None))
    diff_average = (p_diff * k_diff).sum(axis=1)
    inv_var_weights = np.zeros(ng)
    inv_var_weights[1:] = 1.0 / k_diff[1:] ** 2

    values: dict[str, FloatArray] = {
        "MCC": _mcc(p, px, py),
        "Autocorrelation": autocorrelation,
        "JointAverage": ux,
        "ClusterProminence": (p * centred**4).sum(axis=(1, 2)),
        "ClusterShade": (p * centred**3).sum(axis=(1, 2)),
        "ClusterTendency": (p * centred**2).sum(axis=(1, 2)),
        "Contrast": (p * ((i - j) ** 2)[None]).sum(axis=(1, 2)),
        "Correlation": correlation,
        "DifferenceAverage": diff_average,
        "DifferenceEntropy": entropy(p_diff, (1,)),
        "DifferenceVariance": (p_diff * (k_diff[None] - diff_average[:, None]) ** 2).sum(axis=1),
        "JointEnergy": (p**2).sum(axis=(1, 2)),
        "JointEntropy": hxy,
        "Imc1": imc1,
        "Imc2": imc2,
        "Idm": (p_diff / (1.0 + k_diff**2)).sum(axis=1),
        "Idmn": (p_diff / (1.0 + k_diff**2 / ng**2)).sum(axis=1),
        "Id": (p_diff / (1.0 + k_diff)).sum(axis=1),
        "Idn": (p_diff / (1.0 + k_diff / ng)).sum(axis=1),
        "InverseVariance": (p_diff * inv_var_weights).sum(axis=1),
        "MaximumProbability": p.max(axis=(1, 2)),
        "SumAverage": (p_sum * k_sum).sum(axis=1),
        "SumEntropy": entropy(p_sum, (1,)),
        "SumSquares": (p * (i[None] - ux[:, None, None]) ** 2).sum(axis=(1, 2)),
    }
    return _average(values, _GLCM)


def _mcc(p: FloatArray, px: FloatArray, py: FloatArray) -> FloatArray:
    """Maximal correlation coefficient per direction: sqrt of the second-largest eigenvalue of
    Q(i, j) = sum_k p(i, k) p(j, k) / (px(i) py(k)).

    Q = D^-1/2 B B^T D^1/2 with B(i, k) = p(i, k) / sqrt(px(i) py(k)) (D = diag(px)), so its
    eigenvalues are the squared singular values of B and MCC is B's second singular value: a
    symmetric, real computation instead of the eigenvalues of the non-symmetric Q. Rows and
    columns of empty grey levels are zero and add only zero singular values. One grey level
    (a flat region) has no second eigenvalue: 1, pyradiomics' choice.
    """
    if p.shape[1] < 2:
        return np.ones(p.shape[0])
    scale = np.sqrt(px[:, :, None] * py[:, None, :])
    b = np.divide(p, scale, out=np.zeros_like(p), where=scale > 0)
    singular = np.linalg.svd(b, compute_uv=False)  # (A, Ng), descending
    return np.asarray(singular[:, 1], dtype=np.float64)


def _runs(padded: npt.NDArray[np.int32], d: tuple[int, int, int]) -> tuple[IntArray, IntArray]:
    """Grey level and length of every run along direction `d` (which has a positive stride).

    A run starts at an ROI voxel p whose predecessor p - d has another level (or is outside the
    ROI) and ends at an ROI voxel whose successor p + d has another level. Starts and ends are
    listed in flat (C) order; a stable sort by line then puts each line's starts (and ends) in
    order along the line, so the k-th start and the k-th end delimit the same run.
    """
    centre = _shifted(padded, (0, 0, 0))
    before = _shifted(padded, (-d[0], -d[1], -d[2]))
    after = _shifted(padded, d)
    inside = centre > 0
    starts = np.flatnonzero(inside & (before != centre))
    ends = np.flatnonzero(inside & (after != centre))
    # Position t of every voxel along its line (steps back to the grid edge), and the flat
    # index of the line's first voxel, which identifies the line; built by broadcasting.
    shape = centre.shape
    axes = [
        np.arange(n, dtype=np.int64).reshape([-1 if a == b else 1 for b in range(3)])
        for a, n in enumerate(shape)
    ]
    back = [
        ax if k == 1 else shape[a] - 1 - ax
        for a, (ax, k) in enumerate(zip(axes, d, strict=True))
        if k
    ]
    t = back[0]
    for other in back[1:]:
        t = np.minimum(t, other)
    t = np.broadcast_to(t, shape).ravel()
    stride = d[0] * shape[1] * shape[2] + d[1] * shape[2] + d[2]  # flat step along d
    start_t, end_t = t[starts], t[ends]
    start_line = starts - start_t * stride
    end_line = ends - end_t * stride
    start_order = np.argsort(start_line, kind="stable")
    end_order = np.argsort(end_line, kind="stable")
    lengths = end_t[end_order] - start_t[start_order] + 1
    grey = centre.ravel()[starts[start_order]].astype(np.int64)
    return grey, lengths


def glrlm_matrices(levels: npt.ArrayLike, n_levels: int) -> FloatArray:
    """Grey-level run-length counts, shape (13, Ng, Nr), one matrix per direction.

    Entry [a, i-1, r-1] counts the maximal runs of r consecutive ROI voxels of level i along
    DIRECTIONS_3D[a]; voxels outside the ROI end a run. Nr is the longest run in any direction
    (at least 1). For every direction, sum over (i, r) of r * count equals the number of ROI
    voxels.
    """
    padded = _check_levels(levels, n_levels)
    ng = int(n_levels)
    runs = [_runs(padded, d) for d in DIRECTIONS_3D]
    nr = max([1] + [int(lengths.max()) for _, lengths in runs if lengths.size])
    out = np.zeros((len(DIRECTIONS_3D), ng, nr), dtype=np.float64)
    for a, (grey, lengths) in enumerate(runs):
        codes = (grey - 1) * nr + (lengths - 1)
        out[a] = np.bincount(codes, minlength=ng * nr).reshape(ng, nr)
    return out


def glrlm_features(levels: npt.ArrayLike, n_levels: int) -> dict[str, float]:
    """The 16 pyradiomics GLRLM features (`original_glrlm_*`), averaged over the directions.

    Takes the same `levels`/`n_levels` as `glrlm_matrices`. An ROI of zero voxels gives NaN.
    """
    counts = glrlm_matrices(levels, n_levels)
    n_voxels = int(np.count_nonzero(np.asarray(levels)))
    n_runs = counts.sum(axis=(1, 2))  # (A,)
    counts = counts[n_runs > 0]
    n_runs = n_runs[n_runs > 0]
    if counts.shape[0] == 0:
        return {_GLRLM + name: float("nan") for name in GLRLM_FEATURES}
    _, ng, nr = counts.shape
    i = np.arange(1, ng + 1, dtype=np.float64)
    r = np.arange(1, nr + 1, dtype=np.float64)
    pg = counts.sum(axis=2)  # (A, Ng): runs per grey level
    pr = counts.sum(axis=1)  # (A, Nr): runs per length
    p = counts / n_runs[:, None, None]
    pg_norm = pg / n_runs[:, None]
    pr_norm = pr / n_runs[:, None]
    ui = (pg_norm * i).sum(axis=1)
    ur = (pr_norm * r).sum(axis=1)
    i2 = (i**2)[None, :, None]
    r2 = (r**2)[None, None, :]

    values: dict[str, FloatArray] = {
        "ShortRunEmphasis": (pr / r**2).sum(axis=1) / n_runs,
        "LongRunEmphasis": (pr * r**2).sum(axis=1) / n_runs,
        "GrayLevelNonUniformity": (pg**2).sum(axis=1) / n_runs,
        "GrayLevelNonUniformityNormalized": (pg**2).sum(axis=1) / n_runs**2,
        "RunLengthNonUniformity": (pr**2).sum(axis=1) / n_runs,
        "RunLengthNonUniformityNormalized": (pr**2).sum(axis=1) / n_runs**2,
        "RunPercentage": n_runs / n_voxels,
        "GrayLevelVariance": (pg_norm * (i[None] - ui[:, None]) ** 2).sum(axis=1),
        "RunVariance": (pr_norm * (r[None] - ur[:, None]) ** 2).sum(axis=1),
        "RunEntropy": -(p * np.log2(p + _EPS)).sum(axis=(1, 2)),
        "LowGrayLevelRunEmphasis": (pg / i**2).sum(axis=1) / n_runs,
        "HighGrayLevelRunEmphasis": (pg * i**2).sum(axis=1) / n_runs,
        "ShortRunLowGrayLevelEmphasis": (counts / (i2 * r2)).sum(axis=(1, 2)) / n_runs,
        "ShortRunHighGrayLevelEmphasis": (counts * i2 / r2).sum(axis=(1, 2)) / n_runs,
        "LongRunLowGrayLevelEmphasis": (counts * r2 / i2).sum(axis=(1, 2)) / n_runs,
        "LongRunHighGrayLevelEmphasis": (counts * i2 * r2).sum(axis=(1, 2)) / n_runs,
    }
    return _average(values, _GLRLM)


def texture_features(
    image: sitk.Image, mask: sitk.Image, bin_width: float = 25.0
) -> dict[str, float]:
    """All GLCM and GLRLM features of the ROI (`mask` != 0), sorted by name.

    The ROI is discretised with fixed bin width `bin_width` (pyradiomics' rule, see
    `radflow.features.discretise.discretise`); matrices are built in voxel index space, so
    anisotropic spacing is not accounted for (as in pyradiomics without resampling).
    """
    levels, n_levels = roi_array(image, mask, bin_width)
    features = glcm_features(levels, n_levels) | glrlm_features(levels, n_levels)
    return dict(sorted(features.items()))
