"""How well a segmentation model finds the region on held-out studies: per case, then per test
set with patient-level bootstrap confidence intervals.

The surface metrics are MONAI's (`compute_hausdorff_distance`, `compute_surface_dice`) in
millimetres on the arrays' own spacing; radflow adds the conventions MONAI leaves open (empty
masks), the volumes a clinician reads (false-positive volume in ml) and the cluster bootstrap
a model card needs (several studies of one patient move together, as in the classifier's
evaluation). Every value is a plain float rounded to 4 decimals, or None where a metric is
undefined, never NaN, so a model card stores it as JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.hausdorff_distance import compute_hausdorff_distance
from monai.metrics.surface_dice import compute_surface_dice
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from scipy import ndimage

from radflow.models.evaluation import group_resample_indices

__all__ = [
    "CaseMetrics",
    "MetricSummary",
    "SegmentationSummary",
    "case_metrics",
    "summarise",
]

DECIMALS = 4
CI_PERCENTILES = (2.5, 97.5)  # a 95 % percentile interval
# Components of the prediction are 26-connected: voxels that share a corner are one blob.
_COMPONENT_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class CaseMetrics(_Frozen):
    """One test study's prediction against its annotation.

    `dice`: 2|T∩P| / (|T| + |P|); 1 when both masks are empty, 0 when exactly one is.
    `hd95_mm`: symmetric 95 % Hausdorff distance between the masks' boundary voxels (the
    larger of the two directed 95th percentiles), None when either mask is empty.
    `surface_dice`: the share of both boundaries (weighted by surface area) lying within
    `tolerance_mm` of the other; 1 when both are empty, 0 when exactly one is.
    `detected`: the prediction overlaps the annotation by at least one voxel; None when the
    annotation is empty (nothing to detect).
    `false_positive_ml`: the volume of the prediction's connected components (26-connected)
    that share no voxel with the annotation.
    """

    dice: float
    hd95_mm: float | None
    surface_dice: float
    tolerance_mm: float
    detected: bool | None
    false_positive_ml: float
    truth_ml: float
    predicted_ml: float


class MetricSummary(_Frozen):
    """The mean of one metric over a test set and its 95 % patient-level bootstrap interval.

    `n_cases` counts the cases where the metric is defined (e.g. HD95 needs both masks);
    `mean` and `ci` are None when there is none.
    """

    mean: float | None
    ci: tuple[float, float] | None
    n_cases: int


class SegmentationSummary(_Frozen):
    """A segmentation model's test-set metrics, as its model card stores them."""

    dice: MetricSummary
    hd95_mm: MetricSummary
    surface_dice: MetricSummary
    detection_rate: MetricSummary
    false_positive_ml: MetricSummary
    tolerance_mm: float
    n_cases: int
    n_patients: int
    n_boot: int
    seed: int


def _rounded(value: float) -> float:
    return round(float(value), DECIMALS)


def _validated_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be three positive millimetre values, got {spacing_mm}")
    return spacing[0], spacing[1], spacing[2]


def _around_both(
    truth: NDArray[np.bool_], predicted: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Both masks cropped to their union's bounding box plus one voxel (within the array).

    Every metric here is unchanged by the crop (components, boundaries and distances all lie
    inside it; the margin keeps each boundary where the array's edge did not cut it), and on a
    512 x 512 x 60 CT it saves MONAI most of a second of whole-array passes.
    """
    union = truth | predicted
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(np.any(union, axis=other))
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    window = tuple(box)
    return truth[window], predicted[window]


def _unmatched_voxels(truth: NDArray[np.bool_], predicted: NDArray[np.bool_]) -> int:
    """Voxels of the predicted components that share no voxel with the truth."""
    labels, _ = ndimage.label(predicted, structure=_COMPONENT_STRUCTURE)
    matched = np.unique(labels[truth & predicted])
    return int(np.count_nonzero(predicted & ~np.isin(labels, matched)))


def _surface_metrics(
    truth: NDArray[np.bool_],
    predicted: NDArray[np.bool_],
    spacing: tuple[float, float, float],
    tolerance_mm: float,
) -> tuple[float, float]:
    """(HD95 in mm, surface Dice) of two non-empty masks, both from MONAI.

    Surface Dice uses MONAI's sub-voxel surfaces (each boundary element weighted by its area,
    the published normalised surface Dice): counting boundary voxels instead would weight a
    square millimetre of a face across thick slices several times less than one along them.
    """
    y_pred = torch.from_numpy(predicted[None, None].astype(np.float32))
    y = torch.from_numpy(truth[None, None].astype(np.float32))
    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated argument to itself; nothing for callers to fix.
        warnings.filterwarnings("ignore", "monai.metrics.utils get_mask_edges", FutureWarning)
        hd95 = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=95, spacing=list(spacing)
        )
        nsd = compute_surface_dice(
            y_pred,
            y,
            class_thresholds=[tolerance_mm],
            include_background=True,
            spacing=list(spacing),
            use_subvoxels=True,
        )
    return float(hd95.item()), float(nsd.item())


def case_metrics(
    truth: np.ndarray,
    predicted: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    tolerance_mm: float = 2.0,
) -> CaseMetrics:
    """Every metric of one case; masks are (z, y, x) arrays of one shape, non-zero inside, and
    `spacing_mm` is in the same (z, y, x) order."""
    t = np.asarray(truth) != 0
    p = np.asarray(predicted) != 0
    if t.ndim != 3 or t.shape != p.shape:
        raise ValueError(f"need two 3-D masks of one shape, got {t.shape} and {p.shape}")
    spacing = _validated_spacing(spacing_mm)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a non-negative number, got {tolerance_mm}")
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    n_truth, n_predicted = int(np.count_nonzero(t)), int(np.count_nonzero(p))
    overlap = int(np.count_nonzero(t & p))
    if n_truth or n_predicted:
        t, p = _around_both(t, p)
    hd95: float | None = None
    if n_truth == 0 and n_predicted == 0:
        dice, surface_dice = 1.0, 1.0
    elif n_truth == 0 or n_predicted == 0:
        dice, surface_dice = 0.0, 0.0
    else:
        # Dice is one line of counting; MONAI's compute_dice adds only its own empty rules.
        dice = 2.0 * overlap / (n_truth + n_predicted)
        hd95, surface_dice = _surface_metrics(t, p, spacing, tolerance_mm)
    return CaseMetrics(
        dice=_rounded(dice),
        hd95_mm=None if hd95 is None else _rounded(hd95),
        surface_dice=_rounded(surface_dice),
        tolerance_mm=float(tolerance_mm),
        detected=None if n_truth == 0 else overlap > 0,
        false_positive_ml=_rounded(_unmatched_voxels(t, p) * voxel_ml),
        truth_ml=_rounded(n_truth * voxel_ml),
        predicted_ml=_rounded(n_predicted * voxel_ml),
    )


def _summary(values: NDArray[np.float64], counts: NDArray[np.float64]) -> MetricSummary:
    """Mean over the defined (non-NaN) values and the percentile interval of the resample
    means; a resample without a defined value has no mean and is skipped."""
    defined = ~np.isnan(values)
    if not defined.any():
        return MetricSummary(mean=None, ci=None, n_cases=0)
    filled = np.where(defined, values, 0.0)
    sums = counts @ filled
    weights = counts @ defined.astype(np.float64)
    means = sums[weights > 0] / weights[weights > 0]
    lo, hi = np.percentile(means, CI_PERCENTILES)
    return MetricSummary(
        mean=_rounded(filled.sum() / defined.sum()),
        ci=(_rounded(lo), _rounded(hi)),
        n_cases=int(defined.sum()),
    )


def summarise(
    cases: Sequence[CaseMetrics],
    patients: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> SegmentationSummary:
    """Test-set means with 95 % percentile intervals from a patient-level cluster bootstrap.

    `patients[i]` is the (pseudonymous) patient of `cases[i]`. Each resample draws whole
    patients with replacement (every case of a drawn patient comes along), and the same
    resamples serve every metric, so their intervals describe one uncertainty. The detection
    rate is over cases with an annotation, HD95 over cases where it is defined.
    """
    if len(cases) != len(patients):
        raise ValueError(f"length mismatch: {len(cases)} cases but {len(patients)} patients")
    if not cases:
        raise ValueError("no cases to summarise")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    tolerances = {c.tolerance_mm for c in cases}
    if len(tolerances) != 1:
        raise ValueError(f"cases were measured at different tolerances: {sorted(tolerances)}")
    rng = np.random.default_rng(seed)
    groups = np.asarray(patients)
    # How often each case is drawn in each resample (one row per resample).
    counts = np.empty((n_boot, len(cases)), dtype=np.float64)
    for b in range(n_boot):
        counts[b] = np.bincount(group_resample_indices(groups, rng), minlength=len(cases))

    def column(values: list[float | bool | None]) -> NDArray[np.float64]:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

    return SegmentationSummary(
        dice=_summary(column([c.dice for c in cases]), counts),
        hd95_mm=_summary(column([c.hd95_mm for c in cases]), counts),
        surface_dice=_summary(column([c.surface_dice for c in cases]), counts),
        detection_rate=_summary(column([c.detected for c in cases]), counts),
        false_positive_ml=_summary(column([c.false_positive_ml for c in cases]), counts),
        tolerance_mm=tolerances.pop(),
        n_cases=len(cases),
        n_patients=int(np.unique(groups).size),
        n_boot=n_boot,
        seed=seed,
    )
