"""`radflow ingest --masks`: a real ingest flow, through the CLI, over synthetic studies
whose soft-tissue lesions no threshold finds, with only annotations allowed as ROI sources;
each study's label map (its true lesion, written as NIfTI on the primary series' grid) is
its ROI, voxel for voxel through preprocessing and into its feature row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from radflow.cli import app
from radflow.config import load_settings
from radflow.imaging.pipelines import preprocess_pipelines
from radflow.imaging.read import read_series
from radflow.synth import SynthSpec, SynthStudy, synthesize

pytestmark = pytest.mark.flow

SPEC = SynthSpec(studies=3, rows=48, columns=48, slices=24, seed=11, soft_tissue_lesions=1.0)


def _primary(study: SynthStudy) -> list[Path]:
    return [
        p
        for p in study.files
        if str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID)
        == study.series_uids[0]
    ]


def _labelmap(study: SynthStudy, path: Path, decoy: bool) -> sitk.Image:
    """The study's true lesion as a label map on its primary grid: value 2 with a decoy
    region of value 1 (the CSV then names label 2), else value 1 alone."""
    assert study.truth is not None
    truth = study.truth.mask()
    labels = truth.astype(np.uint8) * (2 if decoy else 1)
    if decoy:
        labels[0, :3, :3] = 1
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(read_series(_primary(study)))
    sitk.WriteImage(image, str(path), useCompression=True)
    return image


def test_every_study_takes_its_label_map_as_roi(
    prefect_server: None,
    pipeline_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("RADFLOW_PREPROCESS__ROI_SOURCES", '["annotation"]')
    inbox, labels = pipeline_env / "inbox", pipeline_env / "labels.csv"
    studies = synthesize(inbox, labels, SPEC)
    truth = {r["study_uid"]: r for r in csv.DictReader((pipeline_env / "truth.csv").open())}
    assert all(truth[s.study_uid]["lesion"] == "soft" for s in studies)
    masks_dir = pipeline_env / "masks"
    masks_dir.mkdir()
    rows, expected = [], {}
    params = load_settings().preprocess
    for i, study in enumerate(studies):
        path = masks_dir / f"study{i}.nii.gz"
        labelmap = _labelmap(study, path, decoy=i == 0)
        rows.append(f"{study.study_uid},{path.name},{'2' if i == 0 else ''}")
        lesion = sitk.GetArrayFromImage(labelmap) == (2 if i == 0 else 1)
        assert int(lesion.sum()) == int(truth[study.study_uid]["lesion_voxels"]) > 0
        roi = sitk.GetImageFromArray(lesion.astype(np.uint8))
        roi.CopyInformation(labelmap)
        primary = read_series(_primary(study))
        # The same geometry steps preprocess applies to the study's own ROI.
        _, on_grid = preprocess_pipelines(params, "CT").geometry(primary, roi)
        assert on_grid is not None
        expected[study.study_uid] = sitk.GetArrayFromImage(on_grid)
    rows.append("1.2.826.0.1.3680043.8.498.999,study1.nii.gz,")  # a study not delivered
    masks = masks_dir / "masks.csv"
    masks.write_text("study_uid,path,label\n" + "\n".join(rows) + "\n")

    monkeypatch.chdir(pipeline_env)  # the CLI resolves a relative CSV path for the flow
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(
            app,
            ["ingest", str(inbox), "--labels", str(labels), "--masks", "masks/masks.csv", "--json"],
        )
    assert result.exit_code == 0, result.output
    keys = json.loads(result.stdout)
    assert len(keys) == 3
    assert "masks CSV: 1 row(s) name a study that is not in the delivery" in caplog.text
    assert not any(s.study_uid in caplog.text for s in studies)

    lake = pipeline_env / "lake"
    found = []
    spacing = np.prod(params.spacing_mm)
    for key in keys:
        row = json.loads((lake / key).read_text())
        qc = json.loads((lake / row["volume"] / "qc.json").read_text())
        assert row["roi_source"] == qc["roi_source"] == "annotation:labelmap"
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(lake / row["volume"] / "mask.nii.gz")))
        assert qc["roi_voxels"] == int(mask.sum()) > 0
        voxels = row["features"]["original_shape_VoxelVolume"] / spacing
        assert voxels == pytest.approx(qc["roi_voxels"], abs=1e-6)
        stored = sitk.ReadImage(str(lake / row["deid"] / "labelmap.nii.gz"))
        assert set(np.unique(sitk.GetArrayFromImage(stored))) == {0, 1}  # the chosen label
        found.append(mask)
    # Each volume's mask is its label map's lesion on the preprocessed grid, exactly.
    for mask in found:
        (match,) = [u for u, e in expected.items() if np.array_equal(e, mask)]
        expected.pop(match)
    assert expected == {}
