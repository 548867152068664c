"""The candidate classifiers on radiomics features, as scikit-learn pipelines.

Scaling and feature selection are steps of each pipeline, so any cross-validation of a pipeline
selects features inside each fold: selecting on all rows first would leak the held-out labels
into the choice of features.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from radflow.config import TrainSettings
from radflow.models.splits import patients_per_class

FEATURE_CANDIDATES = ("lr", "rf", "gb")


def feature_pipeline(name: str, settings: TrainSettings, n_features: int) -> Pipeline:
    """Constant columns out, standardise, keep the `select_k` best by ANOVA F, then the model.

    Every model is seeded and single-threaded, so a refit gives the same probabilities."""
    models = {
        "lr": lambda: LogisticRegression(C=1.0, max_iter=5000),
        "rf": lambda: RandomForestClassifier(
            n_estimators=settings.n_estimators, random_state=settings.seed, n_jobs=1
        ),
        # Shallow trees: training sets here are tens of rows, where deep boosting overfits.
        "gb": lambda: GradientBoostingClassifier(
            n_estimators=100, max_depth=2, learning_rate=0.1, random_state=settings.seed
        ),
    }
    if name not in models:
        raise ValueError(f"unknown feature candidate {name!r}; one of {', '.join(models)}")
    return Pipeline(
        [
            ("constant", VarianceThreshold(0.0)),
            ("scale", StandardScaler()),
            ("select", SelectKBest(f_classif, k=min(settings.select_k, n_features))),
            ("model", models[name]()),
        ]
    )


def grouped_cv_auc(
    pipeline: Pipeline,
    x: NDArray[np.float64],
    y: NDArray[np.int_],
    groups: Sequence[str],
    seed: int,
) -> float | None:
    """Mean ROC AUC over patient-grouped stratified folds (up to 5) whose AUC is defined;
    None with too few patients."""
    g = np.asarray(groups, dtype=str)
    per_class = min(patients_per_class(g, y).values(), default=0)
    if len(np.unique(y)) < 2 or per_class < 2:
        return None
    folds = StratifiedGroupKFold(n_splits=min(5, per_class), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Grouping can leave a fold with one class: its AUC is undefined (NaN), not an error.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        scores = cross_val_score(pipeline, x, y, groups=g, cv=folds, scoring="roc_auc")
    defined = scores[np.isfinite(scores)]
    return float(np.mean(defined)) if defined.size else None


def selected_importances(pipeline: Pipeline, names: Sequence[str]) -> dict[str, float]:
    """Impurity importances of a fitted tree pipeline, mapped back to every feature name
    (0 for the features the pipeline dropped)."""
    keep = pipeline["constant"].get_support()
    chosen = np.flatnonzero(keep)[pipeline["select"].get_support()]
    values = np.zeros(len(names))
    values[chosen] = pipeline["model"].feature_importances_
    return {n: float(v) for n, v in zip(names, values, strict=True)}
