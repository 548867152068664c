"""Report: a scored study -> its HTML, PDF and DICOM reports (an SR, a SEG of the ROI and an
Encapsulated PDF); a registered model -> its page. Both in `reports/<v>/<hash>/`."""

from __future__ import annotations

from pathlib import Path

import pydicom

from radflow.config import Settings
from radflow.errors import QuarantineError, RadflowError
from radflow.imaging.grid import Grid, mask_on_grid
from radflow.imaging.read import plan_series
from radflow.keys import address as content_address
from radflow.lake import STUDY_HTML, Lake
from radflow.lake.records import Decision, Geometry
from radflow.models.plots import calibration_png, confusion_png, pr_png, roc_png
from radflow.reports.dicom import (
    SegmentedRoi,
    caret_patient_name,
    encapsulated_pdf,
    score_sr,
)
from radflow.reports.facts import StudyFacts, report_date, selection_rows
from radflow.reports.html import model_report, segmentation_section, study_report
from radflow.reports.images import key_image_png
from radflow.reports.pdf import study_report_pdf
from radflow.reports.seg import ROI_SEGMENT, roi_seg, roi_volume_mm3
from radflow.scratch import scratch_dir

NAME = "report"
STUDY_PDF = "study.pdf"
SR_DICOM = "sr.dcm"
SEG_DICOM = "seg.dcm"
PDF_DICOM = "report-pdf.dcm"


def study_report_address(score: str) -> str:
    return content_address("reports", [score])


def address(settings: Settings, score: str) -> str:
    return study_report_address(score)


def run(lake: Lake, settings: Settings, score: str) -> str:
    return write_study_report(lake, score)


def primary_series(
    lake: Lake, deid: str, native: Geometry, folder: Path, primary: str | None = None
) -> tuple[str, Grid, list[Path]]:
    """The de-identified series the volume was built from: `primary` when the QC record's
    selection names it, else found by its geometry (`native`, from the headers alone); its
    UID, its grid as its headers give it (unrounded), and its files (`Lake.series_files`).

    Without a name, series with as many instances as the volume has slices are tried first;
    series on one grid go in the manifest's order."""
    want = Grid.of(native.size, native.spacing_mm, native.origin_mm, native.direction)
    entries = sorted(lake.manifest(deid).series, key=lambda s: s.instances != want.size[2])
    if primary is not None:
        entries = [e for e in entries if e.series_uid == primary]
    for n, entry in enumerate(entries):
        paths = lake.series_files(deid, entry.series_uid, folder / f"series-{n}")
        try:
            plan = plan_series(paths)
        except QuarantineError:
            continue  # not an image series that reads as a volume: not the primary
        grid = Grid.of(plan.size, plan.spacing, plan.origin, plan.direction)
        if grid.matches(want):
            return entry.series_uid, grid, paths
    raise QuarantineError(
        "primary series not found",
        "no series of the de-identified study has the volume's native geometry",
    )


def study_facts(lake: Lake, score: str) -> tuple[StudyFacts, str]:
    """What the study's reports say, and the de-identified study they belong to."""
    result = lake.score(score)
    row = lake.feature_row(result.features)
    qc = lake.qc(result.volume)
    manifest = lake.manifest(row.deid)
    card = lake.card(result.model)
    facts = StudyFacts(
        study_id=result.study_id,
        score=result.probability,
        threshold=result.threshold,
        positive=result.positive,
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
            "ROI source": described_roi_source(lake, qc.roi_source),
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
    return facts, row.deid


def write_study_report(lake: Lake, score: str) -> str:
    """HTML and PDF reports, a DICOM SR, a SEG of the ROI and an Encapsulated PDF in
    `reports/<v>/<hash>/`; the HTML is written last, so its presence means the set is complete.
    Returns the HTML's key."""
    out = study_report_address(score)
    html = f"{out}/{STUDY_HTML}"
    if lake.has(html):
        return html
    facts, deid = study_facts(lake, score)
    volume = lake.score(score).volume
    qc = lake.qc(volume)
    pdf = study_report_pdf(facts)
    with scratch_dir("report") as tmp:
        named = qc.selection.primary if qc.selection is not None else None
        series_uid, native, paths = primary_series(lake, deid, qc.native, tmp, named)
        sources = [caret_patient_name(pydicom.dcmread(p, stop_before_pixels=True)) for p in paths]
        mask = mask_on_grid(lake.image(volume, "mask"), native)
        seg = roi_seg(
            mask,
            sources,
            key=out,
            roi_source=described_roi_source(lake, qc.roi_source),
            content_date=facts.report_date,
        )
        roi = SegmentedRoi(
            seg,
            ROI_SEGMENT,
            series_uid,
            roi_volume_mm3(mask),
            described_roi_source(lake, qc.roi_source),
        )
        # The SR's evidence and the source of both outputs' patient and study modules.
        evidence = sources[0]
        for name, ds in (
            (SEG_DICOM, seg),
            (SR_DICOM, score_sr(facts, [evidence], out, roi)),
            (PDF_DICOM, encapsulated_pdf(facts, pdf, evidence, out)),
        ):
            ds.save_as(tmp / name, enforce_file_format=True)
            lake.put_report_file(out, name, tmp / name)
    lake.put_report_file(out, STUDY_PDF, pdf)
    return lake.put_report_file(out, STUDY_HTML, study_report(facts))


def model_report_address(model: str, decision: Decision, segmentation: str = "") -> str:
    settled = {
        "promoted": decision.promoted,
        "reason": decision.reason,
        "previous": decision.previous,
    }
    return content_address("reports", [model, segmentation] if segmentation else [model], settled)


def _segmentation_section(lake: Lake, model: str, segmentation: str) -> str:
    """The segmentation model trained with `model`: its card, its decision, the classifier on
    the segmentation champion's ROIs (when that evaluation was made), its overlays."""
    if not segmentation:
        return ""
    card = lake.segmentation_card(segmentation)
    champion = lake.segmentation_champion()
    roi = lake.roi_evaluation(model, champion) if champion else None
    overlays = [
        (study, png)
        for study in card.split.test_studies
        if (png := lake.segmentation_overlay(segmentation, study)) is not None
    ]
    return segmentation_section(card, lake.segmentation_decision(segmentation), roi, overlays)


def write_model_report(lake: Lake, model: str, decision: Decision, segmentation: str = "") -> str:
    """`segmentation`: the segmentation model trained in the same run ("" for none)."""
    out = model_report_address(model, decision, segmentation)
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
        segmentation=_segmentation_section(lake, model, segmentation),
        calibration=card.calibration.method,
    )
    return lake.put_report_file(out, "model.html", page)


def described_roi_source(lake: Lake, roi_source: str) -> str:
    """A model's ROI named with the model and its test Dice ("model:seg-… (test Dice
    0.87)"), what a reader of the study's report needs to weigh it; other sources as they
    are."""
    kind, _, model_id = roi_source.partition(":")
    if kind != "model" or not model_id:
        return roi_source
    try:
        card = lake.segmentation_card(lake.find_segmentation(model_id))
    except RadflowError:
        return roi_source
    dice = card.evaluation.dice.mean
    return f"{roi_source} (test Dice {dice:.2f})" if dice is not None else roi_source
