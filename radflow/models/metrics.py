"""Held-out evaluation of a classifier and its ROC plot."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve

from radflow.models.results import Evaluation

__all__ = ["Evaluation", "evaluate"]


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
