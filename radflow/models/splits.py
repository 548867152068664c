"""Patient-level splits: test, then validation from what is left.

Splitting by patient (not by row) keeps a patient's studies out of the test set when any of them
was trained on; otherwise the test AUC would be inflated by near-duplicate scans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedGroupKFold


def patient_split(
    patients: Sequence[str], labels: Sequence[int], test_fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
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
    per_class = patients_per_class(groups, y)
    if min(per_class.values()) < 2:
        raise ValueError(f"need at least 2 patients of each class; patients per class: {per_class}")
    # More folds than patients in the rarest class would leave some folds without that class.
    n_splits = min(round(1 / test_fraction), *per_class.values())
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, test = next(folds.split(np.zeros((len(y), 1)), y, groups))
    return train, test


def patients_per_class(groups: NDArray[np.str_], y: NDArray[np.int_]) -> dict[int, int]:
    return {int(c): len(np.unique(groups[y == c])) for c in np.unique(y)}


@dataclass(frozen=True)
class Split:
    """Row indices of the three patient-disjoint parts of a dataset."""

    fit: NDArray[np.intp]
    validation: NDArray[np.intp]
    test: NDArray[np.intp]

    def counts(self, labels: Sequence[int]) -> dict[str, dict[str, int]]:
        """Rows per class in each part, for the model card and the report."""
        y = np.asarray(labels, dtype=int)
        return {
            part: {"negative": int(np.sum(y[rows] == 0)), "positive": int(np.sum(y[rows] == 1))}
            for part, rows in (
                ("fit", self.fit),
                ("validation", self.validation),
                ("test", self.test),
            )
        }


def three_way_split(
    patients: Sequence[str],
    labels: Sequence[int],
    test_fraction: float,
    validation_fraction: float,
    seed: int,
) -> Split:
    """Test patients first, then validation patients from the rest (another seed), so that
    adding validation never changes which patients are held out for the test."""
    train, test = patient_split(patients, labels, test_fraction, seed)
    try:
        fit, validation = patient_split(
            [patients[i] for i in train], [labels[i] for i in train], validation_fraction, seed + 1
        )
    except ValueError as err:
        raise ValueError(f"after the test split, too few training patients: {err}") from None
    return Split(fit=train[fit], validation=train[validation], test=test)
