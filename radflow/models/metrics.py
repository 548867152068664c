"""Held-out evaluation of a classifier and its ROC plot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve


@dataclass(frozen=True)
class Evaluation:
    """Test-set metrics of one model; plain JSON-able values so it can be stored with the model."""

    auc: float
    accuracy: float
    n_test: int
    n_train: int
    threshold: float
    roc: tuple[list[float], list[float]]  # false-positive rates, true-positive rates

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ROC as two lists)."""
        data = asdict(self)
        data["roc"] = [list(self.roc[0]), list(self.roc[1])]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """The inverse of `to_dict`, e.g. after a JSON round trip."""
        fpr, tpr = data["roc"]
        return cls(
            auc=float(data["auc"]),
            accuracy=float(data["accuracy"]),
            n_test=int(data["n_test"]),
            n_train=int(data["n_train"]),
            threshold=float(data["threshold"]),
            roc=([float(v) for v in fpr], [float(v) for v in tpr]),
        )


def evaluate(
    y_true: ArrayLike, proba: ArrayLike, threshold: float = 0.5, n_train: int = 0
) -> Evaluation:
    """ROC AUC of the scores and accuracy of calling positive at `proba >= threshold`."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(proba, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if len(np.unique(y)) != 2:
        raise ValueError("AUC needs both classes in the test labels")
    fpr, tpr, _ = roc_curve(y, p)
    return Evaluation(
        auc=float(roc_auc_score(y, p)),
        accuracy=float(accuracy_score(y, (p >= threshold).astype(int))),
        n_test=int(y.size),
        n_train=n_train,
        threshold=threshold,
        roc=([float(v) for v in fpr], [float(v) for v in tpr]),
    )
