"""Training: a patient-grouped train/test split and the classifier pipeline.

Splitting by patient (not by row) keeps a patient's studies out of the test set when any of them
was trained on; otherwise the test AUC would be inflated by near-duplicate scans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class TrainParams:
    """Everything besides the data that decides a model; `asdict` it into the model record."""

    seed: int = 0
    test_fraction: float = 0.25
    n_estimators: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction <= 0.5:
            raise ValueError(f"test_fraction must be in (0, 0.5], got {self.test_fraction}")
        if self.n_estimators < 1:
            raise ValueError(f"n_estimators must be at least 1, got {self.n_estimators}")


def patient_split(
    patients: Sequence[str], labels: Sequence[int], test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices, stratified by label, with every patient's rows on one side.

    The test set is the first fold of a StratifiedGroupKFold with round(1 / test_fraction) folds
    (fewer if a class has fewer patients), shuffled by `seed` so that a seed fixes the split.
    """
    if len(patients) != len(labels):
        raise ValueError(f"{len(patients)} patients but {len(labels)} labels")
    if not 0 < test_fraction <= 0.5:
        raise ValueError(f"test_fraction must be in (0, 0.5], got {test_fraction}")
    groups = np.asarray(patients, dtype=str)
    y = np.asarray(labels, dtype=int)
    if len(np.unique(y)) < 2:
        raise ValueError("need at least 2 patients of each class; all labels are the same")
    per_class = {int(c): len(np.unique(groups[y == c])) for c in np.unique(y)}
    if min(per_class.values()) < 2:
        raise ValueError(f"need at least 2 patients of each class; patients per class: {per_class}")
    # More folds than patients in the rarest class would leave some folds without that class.
    n_splits = min(round(1 / test_fraction), *per_class.values())
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, test = next(folds.split(np.zeros((len(y), 1)), y, groups))
    return train, test


def build_model(params: TrainParams) -> Pipeline:
    """Standardised features into a random forest; n_jobs=1 keeps fits reproducible and polite."""
    forest = RandomForestClassifier(
        n_estimators=params.n_estimators, random_state=params.seed, n_jobs=1
    )
    return Pipeline([("scale", StandardScaler()), ("forest", forest)])


def validation_threshold(
    params: TrainParams, x: np.ndarray, y: np.ndarray, groups: Sequence[str]
) -> float:
    """The operating threshold, chosen by Youden's J on out-of-fold predictions of the
    training patients: the test set never takes part in choosing it. 0.5 when the training
    set has fewer than two patients of a class (no patient-grouped folds possible)."""
    from sklearn.model_selection import cross_val_predict

    from radflow.models.evaluation import choose_threshold

    g = np.asarray(groups, dtype=str)
    per_class = min(len(np.unique(g[y == c])) for c in (0, 1))
    if per_class < 2:
        return 0.5
    folds = StratifiedGroupKFold(n_splits=min(5, per_class), shuffle=True, random_state=params.seed)
    oof = cross_val_predict(build_model(params), x, y, groups=g, cv=folds, method="predict_proba")
    return choose_threshold(y, oof[:, 1])
