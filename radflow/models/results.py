"""The plain results of evaluating a classifier: JSON-able values without scikit-learn, so a
model card can name them without importing the metrics that compute them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


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


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def stored_probabilities(values: Any) -> list[float]:
    """Probabilities as the lake keeps a candidate's: 10 significant digits, so the last bits
    of a fit that differ between machines do not change a record's bytes. Significant digits,
    not decimals: a model far from its few training rows says 1e-19 and 1e-22, and 8 decimals
    made both 0.0, a tie that scored a model which ranked them right as AUC 0.5."""
    return [float(f"{float(v):.10g}") for v in values]


@dataclass(frozen=True)
class Report:
    """Test-set metrics of one model at one threshold; plain JSON-able values.

    `confusion` is ``((tn, fp), (fn, tp))``; `calibration` is (mean predicted probability,
    fraction positive) per quantile bin; `roc` is (false-positive rates, true-positive
    rates); `pr` is (precisions, recalls) as from `precision_recall_curve`.
    """

    auc: float
    auc_ci: tuple[float, float]
    pr_auc: float  # average precision
    accuracy: float
    precision: float
    recall: float  # sensitivity
    specificity: float
    f1: float
    brier: float
    threshold: float
    confusion: tuple[tuple[int, int], tuple[int, int]]
    calibration: tuple[list[float], list[float]]
    n: int
    n_positive: int
    roc: tuple[list[float], list[float]]
    pr: tuple[list[float], list[float]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (pairs become two-element lists)."""
        data = asdict(self)
        data["auc_ci"] = list(self.auc_ci)
        data["confusion"] = [list(row) for row in self.confusion]
        for key in ("calibration", "roc", "pr"):
            first, second = getattr(self, key)
            data[key] = [list(first), list(second)]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """The inverse of `to_dict`, e.g. after a JSON round trip."""

        def pair(key: str) -> tuple[list[float], list[float]]:
            first, second = data[key]
            return _floats(first), _floats(second)

        lo, hi = data["auc_ci"]
        (tn, fp), (fn, tp) = data["confusion"]
        return cls(
            auc=float(data["auc"]),
            auc_ci=(float(lo), float(hi)),
            pr_auc=float(data["pr_auc"]),
            accuracy=float(data["accuracy"]),
            precision=float(data["precision"]),
            recall=float(data["recall"]),
            specificity=float(data["specificity"]),
            f1=float(data["f1"]),
            brier=float(data["brier"]),
            threshold=float(data["threshold"]),
            confusion=((int(tn), int(fp)), (int(fn), int(tp))),
            calibration=pair("calibration"),
            n=int(data["n"]),
            n_positive=int(data["n_positive"]),
            roc=pair("roc"),
            pr=pair("pr"),
        )
