"""Held-out evaluation of a binary classifier: threshold choice, bootstrap CI and a full report.

Pure functions on arrays of labels (0/1) and predicted probabilities of the positive class;
no I/O. A case is called positive when ``proba >= threshold`` (scikit-learn's `roc_curve`
convention). Every metric comes from `sklearn.metrics` / `sklearn.calibration` except where a
comment says why it is written by hand.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from radflow.models.results import Report, _floats

__all__ = [
    "Report",
    "bootstrap_auc_ci",
    "choose_threshold",
    "evaluate_report",
    "group_resample_indices",
]

CALIBRATION_BINS = 5


def _validated(y_true: ArrayLike, proba: ArrayLike) -> tuple[NDArray[np.int_], NDArray[np.float64]]:
    """Labels as 0/1 ints and scores as floats, or a clear ValueError."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=float)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError("y_true and proba must be one-dimensional")
    if y.shape != p.shape:
        raise ValueError(f"length mismatch: {y.size} labels but {p.size} scores")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba has non-finite values (NaN or infinity)")
    if np.any((p < 0.0) | (p > 1.0)):
        raise ValueError("proba must lie in [0, 1]")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"y_true must be binary 0/1, got labels {sorted(labels)}")
    if len(labels) != 2:
        raise ValueError("y_true has only one class; ROC AUC needs both")
    return y.astype(int), p


def _validated_groups(groups: ArrayLike | None, n: int) -> NDArray[Any] | None:
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"length mismatch: {n} labels but {g.size} groups")
    return g


def choose_threshold(
    y_true: ArrayLike,
    proba: ArrayLike,
    rule: Literal["youden", "sensitivity"] = "youden",
    target_sensitivity: float = 0.9,
) -> float:
    """A decision threshold on the probabilities (positive at ``proba >= threshold``).

    ``rule="youden"`` maximises Youden's J = sensitivity + specificity - 1 = TPR - FPR over
    the ROC curve (ties go to the highest threshold); ``rule="sensitivity"`` gives the
    highest threshold whose sensitivity (TPR) reaches `target_sensitivity`.

    Call this on validation predictions (e.g. out-of-fold predictions on the training set),
    never on the test set: a threshold tuned on the test labels makes every test metric that
    depends on it (accuracy, precision, recall, specificity, F1, confusion) optimistically
    biased.
    """
    y, p = _validated(y_true, proba)
    # Keep every threshold so the first one reaching the target sensitivity is not dropped.
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # thresholds[0] is +inf (nothing called positive); it is never a usable cut.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if rule == "youden":
        youden = tpr - fpr
        # Ties (up to float rounding of the rates) go to the first, i.e. highest, threshold.
        index = int(np.argmax(youden >= youden.max() - 1e-12))
    elif rule == "sensitivity":
        if not 0.0 < target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
        # tpr is non-decreasing as the thresholds decrease and ends at 1.0, so a hit exists.
        index = int(np.argmax(tpr >= target_sensitivity))
    else:
        raise ValueError(f"unknown rule {rule!r}; use 'youden' or 'sensitivity'")
    return float(thresholds[index])


def group_resample_indices(groups: ArrayLike, rng: np.random.Generator) -> NDArray[np.intp]:
    """Row indices of one cluster-bootstrap resample: whole groups drawn with replacement.

    As many groups are drawn as there are distinct groups, and every row of a drawn group
    is taken (once per draw), so rows of one patient always stay together.
    """
    g = np.asarray(groups)
    _, codes = np.unique(g, return_inverse=True)
    codes = codes.ravel()
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    drawn = rng.integers(0, counts.size, size=counts.size)
    return np.concatenate([order[starts[k] : starts[k] + counts[k]] for k in drawn]).astype(np.intp)


def _row_resample_indices(n: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """Row indices of one ordinary bootstrap resample of `n` rows."""
    return rng.integers(0, n, size=n).astype(np.intp)


def _weighted_aucs(
    y: NDArray[np.int_], p: NDArray[np.float64], counts: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The ROC AUC of every resample at once, resamples with a single class left out.

    roc_auc_score per resample dominated a training's time (1000 calls); with rows weighted
    by how often they were drawn, the AUC is the Mann-Whitney statistic: the weighted share
    of (positive, negative) pairs ranked correctly, ties counting a half, as roc_auc_score
    counts them.
    """
    _, tie_group = np.unique(p, return_inverse=True)
    one_hot = np.zeros((p.size, int(tie_group.max()) + 1))
    one_hot[np.arange(p.size), tie_group.ravel()] = 1.0
    positives = (counts * (y == 1)) @ one_hot  # resample x tie group, ascending score
    negatives = (counts * (y == 0)) @ one_hot
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    both = pairs > 0
    won = (positives * (below + 0.5 * negatives)).sum(axis=1)
    return np.asarray(won[both] / pairs[both], dtype=np.float64)


def bootstrap_auc_ci(
    y_true: ArrayLike,
    proba: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    groups: ArrayLike | None = None,
) -> tuple[float, float]:
    """95% percentile bootstrap confidence interval of the ROC AUC.

    Resamples rows with replacement, or whole groups (e.g. patients, so that several images
    of one patient move together) when `groups` is given. Resamples holding a single class
    have no AUC and are skipped. Deterministic for a given `seed`.
    """
    y, p = _validated(y_true, proba)
    g = _validated_groups(groups, y.size)
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    rng = np.random.default_rng(seed)
    # How often each row is drawn in each resample (one row per resample).
    counts = np.empty((n_boot, y.size), dtype=np.float64)
    for b in range(n_boot):
        idx = _row_resample_indices(y.size, rng) if g is None else group_resample_indices(g, rng)
        counts[b] = np.bincount(idx, minlength=y.size)
    aucs = _weighted_aucs(y, p, counts)
    if aucs.size == 0:
        raise ValueError("every bootstrap resample had a single class; no CI")
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def evaluate_report(
    y_true: ArrayLike,
    proba: ArrayLike,
    threshold: float,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Report:
    """Every test-set metric of `proba` against `y_true`, calling positive at ``>= threshold``.

    `threshold` should come from `choose_threshold` on validation predictions. `groups`
    (e.g. patient ids) makes the AUC bootstrap resample whole groups.
    """
    y, p = _validated(y_true, proba)
    g = _validated_groups(groups, y.size)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    pred = (p >= threshold).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    fpr, tpr, _ = roc_curve(y, p)
    precisions, recalls, _ = precision_recall_curve(y, p)
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="quantile")
    return Report(
        auc=float(roc_auc_score(y, p)),
        auc_ci=bootstrap_auc_ci(y, p, n_boot=n_boot, seed=seed, groups=g),
        pr_auc=float(average_precision_score(y, p)),
        accuracy=float(accuracy_score(y, pred)),
        precision=float(precision_score(y, pred, zero_division=0.0)),
        recall=float(recall_score(y, pred, zero_division=0.0)),
        # Specificity is the recall of the negative class; both classes are present, so
        # tn + fp > 0 and there is no zero division.
        specificity=float(recall_score(y, pred, pos_label=0)),
        f1=float(f1_score(y, pred, zero_division=0.0)),
        brier=float(brier_score_loss(y, p)),
        threshold=float(threshold),
        confusion=((int(tn), int(fp)), (int(fn), int(tp))),
        calibration=(_floats(mean_pred), _floats(frac_pos)),
        n=int(y.size),
        n_positive=int(y.sum()),
        roc=(_floats(fpr), _floats(tpr)),
        pr=(_floats(precisions), _floats(recalls)),
    )
