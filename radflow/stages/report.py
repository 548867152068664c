"""Report: HTML pages for a scored study and for a trained model, `reports/<v>/<hash>/`."""

from __future__ import annotations

from typing import Any

from radflow.keys import address
from radflow.models.evaluation import Report
from radflow.models.plots import calibration_png, confusion_png, pr_png, roc_png
from radflow.reports.html import model_report, study_report
from radflow.reports.images import key_image_png
from radflow.stages.features import read_features, read_qc
from radflow.stages.registry import evaluation_of, read_card
from radflow.stages.score import read_score
from radflow.stages.volumes import read_image
from radflow.store import ObjectStore


def write_study_report(store: ObjectStore, score: str) -> str:
    out = f"{address('reports', [score])}/study.html"
    if store.exists(out):
        return out
    result = read_score(store, score)
    volume = str(result["volume"])
    features: dict[str, Any] = read_features(store, str(result["features"]))["features"]  # type: ignore[assignment]
    qc = read_qc(store, volume)
    shown_qc = {
        "series": qc["series"],
        "native size": qc["native"]["size"],  # type: ignore[index]
        "native spacing (mm)": qc["native"]["spacing_mm"],  # type: ignore[index]
        "ROI voxels": qc["roi_voxels"],
        "registration metric": [r["metric"] for r in qc["registration"]],  # type: ignore[attr-defined]
        "warnings": "; ".join(qc["warnings"]) or "none",  # type: ignore[arg-type]
    }
    png = key_image_png(
        read_image(store, f"{volume}/image.nii.gz"), read_image(store, f"{volume}/mask.nii.gz")
    )
    page = study_report(
        study_id=str(result["study_id"]),
        score=float(result["probability"]),
        threshold=float(result["threshold"]),
        model_id=str(result["model_id"]),
        features=features,
        qc=shown_qc,
        key_image_png=png,
    )
    store.put_text(out, page)
    return out


def write_model_report(store: ObjectStore, model: str, decision: dict[str, Any]) -> str:
    settled = {k: decision.get(k) for k in ("promoted", "reason", "previous")}
    out = f"{address('reports', [model], settled)}/model.html"
    if store.exists(out):
        return out
    card = read_card(store, model)
    evaluation = evaluation_of(card)
    report = Report.from_dict(card["report"])
    page = model_report(
        model_id=card["model_id"],
        evaluation=evaluation,
        promoted=bool(decision["promoted"]),
        reason=str(decision["reason"]),
        feature_importances=card["feature_importances"],
        roc_png=roc_png(report, f"ROC, model {card['model_id']}"),
        report=report,
        plots=[
            ("Precision-recall (test set)", pr_png(report, "Precision-recall")),
            ("Calibration (test set)", calibration_png(report, "Calibration")),
            ("Confusion at the operating threshold", confusion_png(report, "Confusion")),
        ],
        candidates=card["comparison"],
        split_counts=card["split"]["counts"],
    )
    store.put_text(out, page)
    return out
