"""What the registry stores and scoring calls: one surface for every kind of model.

Each predictor answers `predict_proba(inputs) -> (n, 2)` like a scikit-learn classifier, where
`inputs` carries both what feature models read and what the CNN reads, so the registry, the
evaluation and scoring never ask which kind of model they hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

_EPS = 1e-6


@dataclass(frozen=True)
class Inputs:
    """Rows of studies: feature columns in the model's `feature_names` order, and the network
    input volumes (n, D, H, W), loaded only when a model needs them."""

    features: NDArray[np.float64]
    volumes: NDArray[np.float32] | None = None


class Predictor(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def needs_volumes(self) -> bool: ...

    def predict_proba(self, inputs: Inputs) -> NDArray[np.float64]: ...


@dataclass(frozen=True)
class OnFeatures:
    """A fitted scikit-learn classifier of feature rows."""

    name: str
    estimator: Any
    needs_volumes: bool = field(default=False, init=False)

    def predict_proba(self, inputs: Inputs) -> NDArray[np.float64]:
        return np.asarray(self.estimator.predict_proba(inputs.features), dtype=np.float64)


@dataclass(frozen=True)
class OnVolumes:
    """A fitted classifier of volumes (the CNN)."""

    name: str
    estimator: Any
    needs_volumes: bool = field(default=True, init=False)

    def predict_proba(self, inputs: Inputs) -> NDArray[np.float64]:
        if inputs.volumes is None:
            raise ValueError(f"model {self.name} reads volumes, and none were given")
        return np.asarray(self.estimator.predict_proba(inputs.volumes), dtype=np.float64)


@dataclass(frozen=True)
class SoftVote:
    """The mean of the members' probabilities (soft voting, equal weights)."""

    name: str
    members: tuple[Predictor, ...]

    @property
    def needs_volumes(self) -> bool:
        return any(m.needs_volumes for m in self.members)

    def predict_proba(self, inputs: Inputs) -> NDArray[np.float64]:
        return np.asarray(
            np.mean([m.predict_proba(inputs) for m in self.members], axis=0), dtype=np.float64
        )


def logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


@dataclass(frozen=True)
class Calibrated:
    """Platt scaling on the logit of the base model's probability, fitted on validation rows.

    Written here because scikit-learn's CalibratedClassifierCV wants array inputs it can index
    and check, and these predictors take `Inputs`. The L2 penalty (C=1) keeps the fit finite
    when the validation rows are perfectly separated, as they can be with tens of rows.

    A calibration must keep the model's order of studies. A fitted slope of zero (validation
    probabilities that are all tied) would give every study one probability, and a negative
    one (a handful of validation rows ranked backwards by chance) would reverse the model; then
    `scaler` is None and the base model's probabilities are kept as they are."""

    base: Predictor
    scaler: LogisticRegression | None

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def needs_volumes(self) -> bool:
        return self.base.needs_volumes

    @property
    def method(self) -> str:
        """For the model card: "platt", or "none" when the fit would not have kept the order."""
        return "none" if self.scaler is None else "platt"

    @classmethod
    def fit(cls, base: Predictor, proba: NDArray[np.float64], y: Sequence[int]) -> Calibrated:
        """`proba`: the base model's P(positive) on the validation rows labelled `y`."""
        scaler = LogisticRegression(C=1.0).fit(logit(np.asarray(proba))[:, None], np.asarray(y))
        return cls(base=base, scaler=scaler if scaler.coef_[0, 0] > 0 else None)

    def calibrate(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.scaler is None:
            return np.asarray(proba, dtype=np.float64)
        return np.asarray(self.scaler.predict_proba(logit(proba)[:, None])[:, 1], dtype=np.float64)

    def predict_proba(self, inputs: Inputs) -> NDArray[np.float64]:
        p = self.calibrate(self.base.predict_proba(inputs)[:, 1])
        return np.column_stack([1 - p, p])


def calibration_slope(
    y: Sequence[int], proba: NDArray[np.float64], min_per_class: int = 5
) -> float | None:
    """The slope of the logistic recalibration of `proba` against `y` (1 is ideal, below 1
    means overconfident). None when it says nothing: with fewer than `min_per_class` rows of
    a class (a slope fitted to a handful of rows is noise), or when the classes are perfectly
    separated (the unpenalised slope then grows without bound)."""
    labels = np.asarray(y, dtype=int)
    lp = logit(np.asarray(proba, dtype=np.float64))
    negatives, positives = lp[labels == 0], lp[labels == 1]
    if min(negatives.size, positives.size) < max(min_per_class, 1):
        return None
    if negatives.max() < positives.min() or positives.max() < negatives.min():
        return None
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(lp[:, None], labels)
    return float(fit.coef_[0, 0])
