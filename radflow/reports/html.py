"""Self-contained, deterministic HTML reports for one study and for one model.

Everything is inline (CSS, images as data: URIs) so that a report can be mailed or archived as a
single file and opened offline; no timestamps, so the same inputs give the same bytes. Every
value is escaped: feature names, QC values and reasons may come from outside the code.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from html import escape

from radflow.lake.records import (
    RoiEvaluation,
    SegmentationCard,
    SegmentationDecision,
)
from radflow.models.evaluation import Report
from radflow.models.metrics import Evaluation
from radflow.reports.facts import NOTICE, StudyFacts

TOP_IMPORTANCES = 10
#: Below this many studies of a class in a split, its metrics (and their intervals) say little.
FEW_STUDIES = 20
_CSS = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}"
    "td.num{text-align:right;font-family:monospace}"
    ".notice{border:2px solid #b00;color:#b00;padding:0.5em;font-weight:bold}"
    ".warning{border:2px solid #b60;color:#840;padding:0.5em}"
    "img{max-width:100%}"
)


def _fmt(value: object) -> str:
    """A value for a table cell: floats to 4 significant digits, anything else as str."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(rows: Iterable[tuple[object, ...]], header: tuple[str, ...]) -> str:
    """A table whose first column names the row and whose other columns are values."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><th>{escape(str(k))}</th>"
        + "".join(f"<td class=num>{escape(_fmt(v))}</td>" for v in values)
        + "</tr>"
        for k, *values in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f'<body><h1>{escape(title)}</h1><p class="notice">{escape(NOTICE)}</p>'
        f"{body}</body></html>\n"
    )


def study_report(facts: StudyFacts) -> str:
    """The report for one scored study (every value in `facts` is already de-identified)."""
    registration = (
        "<h2>Registration check</h2>"
        + _img(facts.registration_png, "Checkerboard of the primary and registered series")
        if facts.registration_png is not None
        else ""
    )
    body = (
        _table(facts.summary(), ("Item", "Value"))
        + "<h2>Acquisition</h2>"
        + _table(facts.acquisition.items(), ("Item", "Value"))
        + "<h2>Key images</h2>"
        + _img(facts.key_image_png, "Lesion outline on axial, coronal and sagittal slices")
        + registration
        + "<h2>Quality control</h2>"
        + _table(sorted(facts.qc.items()), ("Check", "Value"))
        + "<h2>Key features</h2>"
        + _table(facts.key_features(), ("Feature", "Value"))
    )
    return _page("radflow study report", body)


def _report_rows(report: Report) -> list[tuple[str, object]]:
    (tn, fp), (fn, tp) = report.confusion
    lo, hi = report.auc_ci
    return [
        ("ROC AUC (95% bootstrap CI over patients)", f"{report.auc:.3f} ({lo:.3f}-{hi:.3f})"),
        ("PR AUC (average precision)", f"{report.pr_auc:.3f}"),
        (
            "Threshold (chosen on the validation patients)",
            f"{report.threshold:.3f}",
        ),
        ("Sensitivity", f"{report.recall:.3f}"),
        ("Specificity", f"{report.specificity:.3f}"),
        ("Precision", f"{report.precision:.3f}"),
        ("F1", f"{report.f1:.3f}"),
        ("Brier score", f"{report.brier:.3f}"),
        ("Confusion (TN, FP, FN, TP)", f"{tn}, {fp}, {fn}, {tp}"),
        ("Test studies (positive)", f"{report.n} ({report.n_positive})"),
    ]


def _candidates_table(candidates: Sequence[Mapping[str, object]]) -> str:
    if not candidates:
        return ""

    def auc(v: object) -> str:
        return "n/a" if v is None else f"{float(v):.3f}"  # type: ignore[arg-type]

    rows = [
        (
            str(c["candidate"]) + (" (chosen)" if c["chosen"] else ""),
            auc(c["validation_auc"]),
            auc(c["cv_auc"]),
            auc(c["test_auc"]),
        )
        for c in candidates
    ]
    return "<h2>Candidates (chosen on validation AUC)</h2>" + _table(
        rows, ("Candidate", "Validation AUC", "Grouped CV AUC", "Test AUC")
    )


def small_split_warnings(counts: Mapping[str, Mapping[str, int]] | None) -> list[str]:
    """One line per split and class with fewer than FEW_STUDIES studies: the metrics computed
    on it (an AUC of 1.000, a narrow interval) are not to be trusted."""
    return [
        f"the {part} split holds {n} {cls} stud{'y' if n == 1 else 'ies'} (fewer than"
        f" {FEW_STUDIES}): its metrics and their intervals are unreliable"
        for part, by_class in (counts or {}).items()
        for cls, n in sorted(by_class.items())
        if n < FEW_STUDIES
    ]


UNCALIBRATED = (
    "calibration not applied: a Platt fit on the validation split would have given every study"
    " one probability or reversed the model's order (tied or backwards validation"
    " probabilities), so the scores are the model's own probabilities"
)


def _warnings(lines: Sequence[str]) -> str:
    return "".join(f'<p class="warning">Warning: {escape(line)}</p>' for line in lines)


def _split_table(counts: Mapping[str, Mapping[str, int]] | None) -> str:
    if not counts:
        return ""
    rows = [(part, c["negative"], c["positive"]) for part, c in counts.items()]
    return "<h2>Data (studies per class)</h2>" + _table(rows, ("Split", "Negative", "Positive"))


def model_report(
    *,
    model_id: str,
    evaluation: Evaluation,
    promoted: bool,
    reason: str,
    feature_importances: Mapping[str, float],
    roc_png: bytes,
    report: Report | None = None,
    plots: Sequence[tuple[str, bytes]] = (),
    candidates: Sequence[Mapping[str, object]] = (),
    split_counts: Mapping[str, Mapping[str, int]] | None = None,
    segmentation: str = "",
    calibration: str = "platt",
) -> str:
    """The report for one trained model: held-out metrics, the promotion decision and why,
    the candidates it was chosen from, and how many studies of each class each split held;
    `segmentation` is the segmentation model's section (`segmentation_section`), if any;
    `calibration` the card's method ("none": warned about)."""
    metrics = [
        ("Model", model_id),
        ("AUC", f"{evaluation.auc:.3f}"),
        (f"Accuracy at {evaluation.threshold:.3f}", f"{evaluation.accuracy:.3f}"),
        ("Training rows", evaluation.n_train),
        ("Test rows", evaluation.n_test),
    ]
    decision = "promoted to champion" if promoted else "not promoted"
    top = sorted(feature_importances.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_IMPORTANCES]
    body = (
        _warnings(small_split_warnings(split_counts))
        + _warnings([UNCALIBRATED] if calibration == "none" else [])
        + _table(metrics, ("Metric", "Value"))
        + f"<h2>Decision</h2><p><b>{escape(decision)}</b>: {escape(reason)}</p>"
        + (_table(_report_rows(report), ("Held-out metric", "Value")) if report else "")
        + "<h2>ROC curve (test set)</h2>"
        + _img(roc_png, "ROC curve on the test set")
        + "".join(f"<h2>{escape(title)}</h2>" + _img(png, title) for title, png in plots)
        + _candidates_table(candidates)
        + _split_table(split_counts)
        + "<h2>Top feature importances</h2>"
        + _table(top, ("Feature", "Importance"))
        + segmentation
    )
    return _page("radflow model report", body)


def _estimate(value: float | None, ci: tuple[float, float] | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return f"{text} ({ci[0]:.{digits}f}-{ci[1]:.{digits}f})" if ci is not None else text


def segmentation_section(
    card: SegmentationCard,
    decision: SegmentationDecision | None,
    roi: RoiEvaluation | None,
    overlays: Sequence[tuple[str, bytes]],
) -> str:
    """The segmentation model in the model report: its test metrics with patient-level
    bootstrap intervals, its promotion, the classifier's AUC with annotation ROIs and with the
    model's ROIs on the same studies, a per-study table and overlay images."""
    e = card.evaluation
    rows = [
        ("Segmentation model", card.model_id),
        ("Test studies (patients)", f"{e.n_cases} ({e.n_patients})"),
        ("Dice", _estimate(e.dice.mean, e.dice.ci)),
        ("95 % Hausdorff distance (mm)", _estimate(e.hd95_mm.mean, e.hd95_mm.ci, 2)),
        (
            f"Surface Dice at {e.tolerance_mm:g} mm",
            _estimate(e.surface_dice.mean, e.surface_dice.ci),
        ),
        ("Detection rate", _estimate(e.detection_rate.mean, e.detection_rate.ci)),
        ("False-positive volume (ml)", _estimate(e.false_positive_ml.mean, e.false_positive_ml.ci)),
        ("Non-empty predictions", f"{e.non_empty_rate:.0%}"),
        ("Trained on", f"{card.training.device}, {card.training.processes} process(es)"),
        ("Best epoch / epochs run", f"{card.training.best_epoch} / {card.training.epochs_run}"),
    ]
    if decision is not None:
        state = "promoted to champion" if decision.promoted else "not promoted"
        rows.append(("Decision", f"{state}: {decision.reason}"))
    if roi is not None:
        rows += [
            (
                f"Classifier AUC, annotation ROIs ({roi.studies} test studies)",
                _estimate(roi.annotation_auc, None),
            ),
            (
                f"Classifier AUC, ROIs of {roi.segmentation_id}",
                _estimate(roi.model_roi_auc, roi.model_roi_auc_ci),
            ),
            ("Studies where the model found no region", str(roi.empty)),
        ]
    failed = card.failed
    cases = [
        (
            c.study_id,
            f"{c.dice:.3f}",
            "n/a" if c.hd95_mm is None else f"{c.hd95_mm:.2f}",
            f"{c.surface_dice:.3f}",
            "n/a" if c.detected is None else "yes" if c.detected else "no",
            f"{c.false_positive_ml:.2f}",
            f"{c.truth_ml:.2f}",
            f"{c.predicted_ml:.2f}",
        )
        for c in e.cases
    ]
    return (
        "<h2>Segmentation model (the ROI of studies without an annotation)</h2>"
        + _warnings([f"sanity check failed: {name}" for name in failed])
        + _table(rows, ("Segmentation", "Value (95 % CI, patient bootstrap)"))
        + "<h3>Per test study</h3>"
        + _table(
            cases,
            (
                "Study",
                "Dice",
                "HD95 mm",
                "Surface Dice",
                "Detected",
                "FP ml",
                "Truth ml",
                "Model ml",
            ),
        )
        + "".join(
            f"<h3>{escape(study)}</h3>" + _img(png, f"annotation and model outline, {study}")
            for study, png in overlays
        )
    )
