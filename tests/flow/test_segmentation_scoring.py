"""The segmentation model through the real ingest, train and score flows: trained beside the
classifier on annotated studies, promoted, and the ROI source of new studies that arrive
without an annotation; the score, the report, the SR and the SEG name the model and its test
Dice, and `radflow train --json`'s result reports both models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from radflow.lake import Lake
from radflow.lake.records import Score
from radflow.store import LocalStore
from radflow.synth import SynthSpec, synthesize

pytestmark = pytest.mark.flow

# Bright lesions, every study annotated (SEG or RTSTRUCT): a model that learns in seconds.
TRAIN = SynthSpec(
    studies=12,
    rows=48,
    columns=48,
    slices=24,
    annotations=("seg", "rtstruct"),
    annotated=1.0,
    seed=11,
)
NEW = replace(TRAIN, studies=2, annotations=(), seed=23)
SMALL_UNET = {
    "RADFLOW_TRAIN__SEGMENTATION__CHANNELS": "[8, 16, 32]",
    "RADFLOW_TRAIN__SEGMENTATION__STRIDES": "[2, 2]",
    "RADFLOW_TRAIN__SEGMENTATION__PATCH": "[24, 24, 24]",
    "RADFLOW_TRAIN__SEGMENTATION__EPOCHS": "12",
    "RADFLOW_TRAIN__SEGMENTATION__SAMPLES_PER_EPOCH": "32",
}


def test_new_studies_without_annotation_are_scored_with_the_models_roi(
    prefect_server: None, pipeline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingest import ingest
    from flows.score import score_flow
    from flows.train import train_flow
    from tasks import runtime as _common

    monkeypatch.setenv("RADFLOW_TRAIN__CANDIDATES", '["lr"]')
    monkeypatch.delenv("RADFLOW_PREPROCESS__ROI_SOURCES", raising=False)  # no rule
    for name, value in SMALL_UNET.items():
        monkeypatch.setenv(name, value)
    _common.settings.cache_clear()
    assert _common.settings().preprocess.roi_sources == ("annotation", "model")
    synthesize(pipeline_env / "train", pipeline_env / "labels.csv", TRAIN)
    new = synthesize(pipeline_env / "new", pipeline_env / "new.csv", NEW)
    assert not any(s.annotation for s in new)
    root = pipeline_env / "lake"
    lake = Lake(LocalStore(root))

    keys = ingest((pipeline_env / "train").as_uri(), "", str(pipeline_env / "labels.csv"))
    trained = train_flow(keys)
    seg = trained["segmentation"]
    assert seg is not None and seg["promoted"], seg
    assert seg["reason"] == "first segmentation model"
    assert seg["metrics"]["dice"]["mean"] >= 0.8
    assert lake.segmentation_champion() == seg["model"]
    roi = seg["classifier_on_model_rois"]
    assert roi["segmentation_id"] == seg["model_id"] and roi["studies"] >= 2
    assert roi["model_roi_auc"] is not None and roi["annotation_auc"] is not None
    page = (root / trained["report"]).read_text()
    assert seg["model_id"] in page and "Classifier AUC, ROIs of" in page
    assert page.count('alt="annotation and model outline') == seg["metrics"]["n_cases"]

    reports = score_flow((pipeline_env / "new").as_uri(), "")
    assert len(reports) == 2
    source = f"model:{seg['model_id']}"
    scores = [Score.from_json(p.read_bytes()) for p in root.glob("scores/*/*")]
    assert sorted(s.roi_source for s in scores) == [source, source]
    dice = f"(test Dice {seg['metrics']['dice']['mean']:.2f})"
    for report in reports:
        folder = root / report.rsplit("/", 1)[0]
        assert f"{source} {dice}" in (folder / "study.html").read_text()
        segmentation = hd.seg.segread(folder / "seg.dcm")
        assert segmentation.ContentDescription == f"ROI the study was scored on ({source})"
        described = segmentation.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence
        assert f"{source} {dice}" in str(described[0].AlgorithmParameters)
        sr = pydicom.dcmread(folder / "sr.dcm")
        texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
        assert f"radflow ROI from {source} {dice}" in texts
