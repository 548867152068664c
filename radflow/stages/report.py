"""Report: HTML pages for a scored study and for a trained model, `reports/<v>/<hash>/`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from radflow.keys import address
from radflow.models.evaluation import Report
from radflow.models.plots import calibration_png, confusion_png, pr_png, roc_png
from radflow.reports.dicom import encapsulated_pdf, score_sr
from radflow.reports.facts import StudyFacts, report_date
from radflow.reports.html import model_report, study_report
from radflow.reports.images import key_image_png
from radflow.reports.pdf import study_report_pdf
from radflow.stages.anonymize import read_manifest
from radflow.stages.features import read_features, read_qc
from radflow.stages.registry import evaluation_of, read_card
from radflow.stages.score import read_score
from radflow.stages.volumes import read_image
from radflow.store import ObjectStore

STUDY_HTML = "study.html"
STUDY_PDF = "study.pdf"
SR_DICOM = "sr.dcm"
PDF_DICOM = "report-pdf.dcm"


def _evidence(store: ObjectStore, deid: str, tmp: Path) -> Dataset:
    """One de-identified instance of the primary series (most instances, then the first
    series UID, as the volumes stage chooses): the SR's evidence and the source of the
    patient and study modules of both DICOM outputs."""
    manifest = read_manifest(store, deid)
    primary = sorted(manifest.series, key=lambda s: (-s.instances, s.series_uid))[0]
    first = next(iter(store.list(f"{deid}/{primary.series_uid}/")))
    path = tmp / "evidence.dcm"
    store.download(first.key, path)
    return pydicom.dcmread(path, stop_before_pixels=True)


def study_facts(store: ObjectStore, score: str) -> tuple[StudyFacts, str]:
    """What the study's reports say, and the de-identified study they belong to."""
    result = read_score(store, score)
    row = read_features(store, str(result["features"]))
    volume, deid = str(result["volume"]), str(row["deid"])
    features: dict[str, float] = row["features"]  # type: ignore[assignment]
    qc: dict[str, Any] = read_qc(store, volume)
    manifest = read_manifest(store, deid)
    card = read_card(store, str(result["model"]))
    registration = f"{volume}/registration_1.png"
    facts = StudyFacts(
        study_id=str(result["study_id"]),
        score=float(result["probability"]),
        threshold=float(result["threshold"]),
        model_id=str(result["model_id"]),
        model_version=str(card["code_version"]["radflow"]),
        report_date=report_date(),
        acquisition={
            "Modality": ", ".join(sorted({s.modality for s in manifest.series})),
            "Series (instances)": ", ".join(str(s.instances) for s in manifest.series),
            "Native size (voxels)": " x ".join(map(str, qc["native"]["size"])),
            "Native spacing (mm)": " x ".join(f"{v:g}" for v in qc["native"]["spacing_mm"]),
            "Preprocessed size": " x ".join(map(str, qc["preprocessed"]["size"])),
        },
        qc={
            "ROI voxels": qc["roi_voxels"],
            "Registration metric (Mattes MI)": ", ".join(
                f"{r['metric']:.4f}" for r in qc["registration"]
            )
            or "single series",
            "Warnings": "; ".join(qc["warnings"]) or "none",
        },
        features=features,
        key_image_png=key_image_png(
            read_image(store, f"{volume}/image.nii.gz"), read_image(store, f"{volume}/mask.nii.gz")
        ),
        registration_png=store.get_bytes(registration) if store.exists(registration) else None,
    )
    return facts, deid


def study_report_address(score: str) -> str:
    return address("reports", [score])


def write_study_report(store: ObjectStore, score: str) -> str:
    """HTML and PDF reports, a DICOM SR and an Encapsulated PDF in `reports/<v>/<hash>/`; the
    HTML is written last, so its presence means the set is complete. Returns the HTML's key."""
    out = study_report_address(score)
    if store.exists(f"{out}/{STUDY_HTML}"):
        return f"{out}/{STUDY_HTML}"
    facts, deid = study_facts(store, score)
    pdf = study_report_pdf(facts)
    with tempfile.TemporaryDirectory(prefix="radflow-report-") as tmp_name:
        tmp = Path(tmp_name)
        evidence = _evidence(store, deid, tmp)
        for name, ds in (
            (SR_DICOM, score_sr(facts, [evidence], out)),
            (PDF_DICOM, encapsulated_pdf(facts, pdf, evidence, out)),
        ):
            ds.save_as(tmp / name, enforce_file_format=True)
            store.put_file(f"{out}/{name}", tmp / name)
    store.put_bytes(f"{out}/{STUDY_PDF}", pdf)
    store.put_text(f"{out}/{STUDY_HTML}", study_report(facts))
    return f"{out}/{STUDY_HTML}"


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
