"""PNG plots of an evaluation `Report`: ROC, precision-recall, calibration and confusion.

Each function returns PNG bytes that are identical for identical input: a bare `Figure` on
an Agg canvas (no pyplot global state) saved without the "Software" metadata entry.
"""

from __future__ import annotations

import io

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from radflow.models.evaluation import Report

__all__ = ["calibration_png", "confusion_png", "pr_png", "roc_png"]

FIGSIZE = (4.0, 4.0)  # inches
DPI = 80


def _new_axes() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def roc_png(report: Report, title: str) -> bytes:
    """The ROC curve, its legend giving the AUC with its 95% bootstrap CI."""
    fig, ax = _new_axes()
    fpr, tpr = report.roc
    lo, hi = report.auc_ci
    ax.plot(fpr, tpr, color="tab:blue", label=f"AUC = {report.auc:.3f} ({lo:.3f}–{hi:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="False-positive rate", ylabel="True-positive rate")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def pr_png(report: Report, title: str) -> bytes:
    """The precision-recall curve with the prevalence (a random classifier) as baseline."""
    fig, ax = _new_axes()
    precision, recall = report.pr
    prevalence = report.n_positive / report.n
    ax.step(recall, precision, where="post", color="tab:blue", label=f"AP = {report.pr_auc:.3f}")
    ax.axhline(prevalence, color="grey", linestyle="--", linewidth=0.8, label="Prevalence")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall (sensitivity)", ylabel="Precision")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.legend(loc="lower left", fontsize="small")
    return _png(fig)


def calibration_png(report: Report, title: str) -> bytes:
    """The reliability diagram: fraction positive against mean predicted probability per bin."""
    fig, ax = _new_axes()
    mean_predicted, fraction_positive = report.calibration
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="Perfect")
    ax.plot(
        mean_predicted,
        fraction_positive,
        marker="o",
        color="tab:blue",
        label=f"Model (Brier {report.brier:.3f})",
    )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="Mean predicted probability",
        ylabel="Fraction positive",
    )
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize="small")
    return _png(fig)


def confusion_png(report: Report, title: str) -> bytes:
    """The 2×2 confusion matrix at the report's threshold, counts written in the cells."""
    fig, ax = _new_axes()
    matrix = [list(row) for row in report.confusion]
    peak = max(max(row) for row in matrix)
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(peak, 1))
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize="large")
    ax.set_xticks([0, 1], labels=["Negative", "Positive"])
    ax.set_yticks([0, 1], labels=["Negative", "Positive"])
    ax.set(xlabel="Predicted", ylabel="Actual")
    ax.set_title(f"{title}\nthreshold {report.threshold:.3f}")
    return _png(fig)
