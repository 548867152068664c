"""Report: a scored study -> its HTML, PDF and DICOM reports; a registered model -> its page.
Both in `reports/<v>/<hash>/`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from radflow.config import Settings
from radflow.keys import address as content_address
from radflow.lake import STUDY_HTML, Lake
from radflow.lake.records import Decision
from radflow.models.plots import calibration_png, confusion_png, pr_png, roc_png
from radflow.reports.dicom import encapsulated_pdf, score_sr
from radflow.reports.facts import StudyFacts, report_date, selection_rows
from radflow.reports.html import model_report, study_report
from radflow.reports.images import key_image_png
from radflow.reports.pdf import study_report_pdf

NAME = "report"
STUDY_PDF = "study.pdf"
SR_DICOM = "sr.dcm"
PDF_DICOM = "report-pdf.dcm"


def study_report_address(score: str) -> str:
    return content_address("reports", [score])


def address(settings: Settings, score: str) -> str:
    return study_report_address(score)


def run(lake: Lake, settings: Settings, score: str) -> str:
    return write_study_report(lake, score)


def _evidence(lake: Lake, deid: str, primary: str | None, tmp: Path) -> Dataset:
    """One de-identified instance of the primary series (the volume's selection; for a
    volume without one, most instances, then the first series UID): the SR's evidence and
    the source of the patient and study modules of both DICOM outputs."""
    if primary is None:
        manifest = lake.manifest(deid)
        primary = sorted(manifest.series, key=lambda s: (-s.instances, s.series_uid))[0].series_uid
    path = tmp / "evidence.dcm"
    lake.download(lake.instances(deid, primary)[0], path)
    return pydicom.dcmread(path, stop_before_pixels=True)


def study_facts(lake: Lake, score: str) -> tuple[StudyFacts, str, str | None]:
    """What the study's reports say, the de-identified study they belong to, and its
    primary series (None for a volume without a selection)."""
    result = lake.score(score)
    row = lake.feature_row(result.features)
    qc = lake.qc(result.volume)
    manifest = lake.manifest(row.deid)
    card = lake.card(result.model)
    facts = StudyFacts(
        study_id=result.study_id,
        score=result.probability,
        threshold=result.threshold,
        model_id=result.model_id,
        model_version=card.code_version.radflow,
        report_date=report_date(),
        acquisition={
            "Modality": ", ".join(sorted({s.modality for s in manifest.series})),
            "Series (instances)": ", ".join(str(s.instances) for s in manifest.series),
            "Native size (voxels)": " x ".join(map(str, qc.native.size)),
            "Native spacing (mm)": " x ".join(f"{v:g}" for v in qc.native.spacing_mm),
            "Preprocessed size": " x ".join(map(str, qc.preprocessed.size)),
        },
        qc={
            "ROI voxels": qc.roi_voxels,
            "Registration metric (Mattes MI)": ", ".join(f"{r.metric:.4f}" for r in qc.registration)
            or "single series",
            "Warnings": "; ".join(qc.warnings) or "none",
            **selection_rows(qc.selection),
        },
        features=row.features,
        key_image_png=key_image_png(
            lake.image(result.volume, "image"),
            lake.image(result.volume, "mask"),
            qc.modality or "CT",
        ),
        registration_png=lake.registration_png(result.volume),
    )
    return facts, row.deid, qc.selection.primary if qc.selection else None


def write_study_report(lake: Lake, score: str) -> str:
    """HTML and PDF reports, a DICOM SR and an Encapsulated PDF in `reports/<v>/<hash>/`; the
    HTML is written last, so its presence means the set is complete. Returns the HTML's key."""
    out = study_report_address(score)
    html = f"{out}/{STUDY_HTML}"
    if lake.has(html):
        return html
    facts, deid, primary = study_facts(lake, score)
    pdf = study_report_pdf(facts)
    with tempfile.TemporaryDirectory(prefix="radflow-report-") as tmp_name:
        tmp = Path(tmp_name)
        evidence = _evidence(lake, deid, primary, tmp)
        for name, ds in (
            (SR_DICOM, score_sr(facts, [evidence], out)),
            (PDF_DICOM, encapsulated_pdf(facts, pdf, evidence, out)),
        ):
            ds.save_as(tmp / name, enforce_file_format=True)
            lake.put_report_file(out, name, tmp / name)
    lake.put_report_file(out, STUDY_PDF, pdf)
    return lake.put_report_file(out, STUDY_HTML, study_report(facts))


def model_report_address(model: str, decision: Decision) -> str:
    settled = {
        "promoted": decision.promoted,
        "reason": decision.reason,
        "previous": decision.previous,
    }
    return content_address("reports", [model], settled)


def write_model_report(lake: Lake, model: str, decision: Decision) -> str:
    out = model_report_address(model, decision)
    page_key = f"{out}/model.html"
    if lake.has(page_key):
        return page_key
    card = lake.card(model)
    report = card.report
    page = model_report(
        model_id=card.model_id,
        evaluation=card.evaluation,
        promoted=decision.promoted,
        reason=decision.reason,
        feature_importances=card.feature_importances,
        roc_png=roc_png(report, f"ROC, model {card.model_id}"),
        report=report,
        plots=[
            ("Precision-recall (test set)", pr_png(report, "Precision-recall")),
            ("Calibration (test set)", calibration_png(report, "Calibration")),
            ("Confusion at the operating threshold", confusion_png(report, "Confusion")),
        ],
        candidates=[c.model_dump() for c in card.comparison],
        split_counts=card.split.counts,
    )
    return lake.put_report_file(out, "model.html", page)
