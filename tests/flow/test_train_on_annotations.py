"""Training and scoring on annotated studies, through the real ingest, train and score flows:
every ROI is the study's own SEG or RTSTRUCT (no threshold rule is configured), the feature
rows hold exactly the annotation's voxels on the preprocessed grid, and the score, the report
and the DICOM SEG out say and show where the ROI came from."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from support.roi_truth import expected_roi_voxels

from radflow.lake import Lake
from radflow.lake.records import Score
from radflow.store import LocalStore
from radflow.synth import SynthSpec, realistic, synthesize

pytestmark = pytest.mark.flow

# Ten annotated studies (a SEG or an RTSTRUCT each, soft-tissue lesions in about half) with
# topograms, reformats and thick recons; and one new annotated study to score.
TRAIN = replace(
    realistic(SynthSpec(studies=10, rows=40, columns=40, slices=16, seed=5)), annotated=1.0
)
NEW = replace(TRAIN, studies=1, seed=21)


def test_train_on_annotated_studies_and_score_an_annotated_one(
    prefect_server: None, pipeline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingest import ingest
    from flows.score import score_flow
    from flows.train import train_flow
    from tasks import runtime as _common

    monkeypatch.setenv("RADFLOW_TRAIN__CANDIDATES", '["lr"]')
    monkeypatch.delenv("RADFLOW_PREPROCESS__ROI_SOURCES", raising=False)  # no rule
    _common.settings.cache_clear()
    params = _common.settings().preprocess
    assert "rule" not in params.roi_sources
    voxel_mm3 = float(np.prod(params.spacing_mm))
    train = synthesize(pipeline_env / "train", pipeline_env / "labels.csv", TRAIN)
    (new,) = synthesize(pipeline_env / "new", pipeline_env / "new.csv", NEW)
    assert all(s.annotation for s in (*train, new))
    root = pipeline_env / "lake"
    lake = Lake(LocalStore(root))

    keys = ingest((pipeline_env / "train").as_uri(), "", str(pipeline_env / "labels.csv"))
    assert len(keys) == len(train)
    by_study = {s.study_uid: s for s in train}
    from radflow.dicom.deid import study_pseudonym

    secret = _common.settings().pseudonym_secret()
    study_of = {study_pseudonym(secret, uid): s for uid, s in by_study.items()}
    for key in keys:
        row = lake.feature_row(key)
        study = study_of[row.study_id]
        assert row.roi_source == f"annotation:{study.annotation.upper()}"
        expected = expected_roi_voxels(study, TRAIN, params)
        assert lake.qc(row.volume).roi_voxels == expected
        assert row.features["original_shape_VoxelVolume"] / voxel_mm3 == pytest.approx(
            expected, rel=1e-9
        )

    trained = train_flow(keys)
    assert trained["promoted"] is True
    (report,) = score_flow((pipeline_env / "new").as_uri(), "")

    (score_file,) = root.glob("scores/*/*")
    score = Score.from_json(score_file.read_bytes())
    source = f"annotation:{new.annotation.upper()}"
    assert score.roi_source == source
    row = lake.feature_row(score.features)
    assert row.roi_source == source
    expected = expected_roi_voxels(new, NEW, params)
    assert row.features["original_shape_VoxelVolume"] / voxel_mm3 == pytest.approx(
        expected, rel=1e-9
    )
    folder = root / report.rsplit("/", 1)[0]
    assert source in (folder / "study.html").read_text()
    seg = hd.seg.segread(folder / "seg.dcm")
    assert seg.number_of_segments == 1
