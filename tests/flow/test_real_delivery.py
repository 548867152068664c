"""A delivery as a hospital sends one, ingested by the real ingest flow: real files nobody
here wrote (pydicom's dicomdirtests CR/CT/MR studies, CT_small, MR_small, its SRs, a secondary
capture and rtstruct.dcm; pydicom-data's SEG liver.dcm, enhanced CT and MR, a J2K CT;
nibabel's Siemens MOSAIC pair; an Encapsulated PDF) beside realistic synthetic studies with
topograms, reformats, thick recons, SEGs and RTSTRUCTs, and a masks CSV giving one of them a
NIfTI label map. The ROI sources are the default (annotation, model: no rule). Every study is
prepared or set aside with radflow's own reason, none fails, and an annotated study's ROI is
its annotation, voxel for voxel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from support.realstudies import (
    DICOMDIR_TESTS,
    copy_tree,
    ct_series,
    encapsulated_pdf,
    mosaic,
    real_file,
    real_object,
    topogram,
    uid,
)
from support.roi_truth import expected_roi_voxels

from radflow.dicom.deid import study_pseudonym
from radflow.imaging.read import read_series_with_warnings
from radflow.lake import Lake
from radflow.store import LocalStore
from radflow.synth import SynthSpec, SynthStudy, realistic, synthesize

pytestmark = pytest.mark.flow

# Seed 3's first four realistic studies: a soft-tissue lesion and a bright one with no
# annotation, an RTSTRUCT (with a 5 mm recon and a coronal reformat), a SEG of a soft-tissue
# lesion; every one with a topogram.
SYNTH = realistic(SynthSpec(studies=4, rows=40, columns=40, slices=16, seed=3))
NO_ROI = "no region of interest: no annotation and no segmentation model"
PREPARED = "prepared"

# Study -> what becomes of it. The dicomdirtests studies are named by tree and description.
EXPECTED = {
    "77654033 XR C Spine Comp Min 4 Views": "projection radiograph (CR/DX): not a 3-D series",
    "77654033 CT, HEAD/BRAIN WO CONTRAST": "missing slices",  # 4 slices 202.5 mm apart
    "98892001 ": NO_ROI,  # a good CT (its 2-image localizer dropped), no annotation
    "98892003 Carotids": "too few slices for a 3-D volume: 1 (need 4)",
    "98892003 Brain": "too few slices for a 3-D volume: 3 (need 4)",  # a 3-plane localizer
    "98892003 Brain-MRA": "derived image (ImageType DERIVED\\SECONDARY), not ORIGINAL\\PRIMARY",
    "mosaic": "Siemens MOSAIC: not unpacked",
    "eCT_Supplemental.dcm": "too few slices for a 3-D volume: 2 (need 4)",  # 2 frames
    "emri_small.dcm": "missing geometry",  # enhanced MR without functional groups
    "MR_small.dcm": "too few slices for a 3-D volume: 1 (need 4)",
    "693_J2KR.dcm": "too few slices for a 3-D volume: 1 (need 4)",
    "CT_small.dcm": "too few slices for a 3-D volume: 1 (need 4)",
    "objects only": "no image series: only RTSTRUCT, SEG",
    "CT with documents": NO_ROI,  # SRs, a secondary capture, a PDF: kept, never an ROI
    "CT with others' annotations": NO_ROI,  # a SEG and an RTSTRUCT of series it lacks
    "synthetic 0": NO_ROI,  # soft tissue, no annotation
    "synthetic 1": PREPARED,  # bright, no annotation in it: a label map in the masks CSV
    "synthetic 2": PREPARED,  # RTSTRUCT
    "synthetic 3": PREPARED,  # SEG of a soft-tissue lesion
}
ROI_SOURCE = {
    "synthetic 1": "annotation:labelmap",
    "synthetic 2": "annotation:RTSTRUCT",
    "synthetic 3": "annotation:SEG",
}
# Their series (number, role, rule) and objects: the 5 mm recon (3) is registered, the coronal
# reformat (4) and the topogram (5) dropped, the annotation (6 SEG, 7 RTSTRUCT) an object.
SELECTION = {
    "synthetic 1": (
        [
            (1, "primary", ""),
            (2, "secondary", ""),
            (3, "secondary", ""),
            (5, "dropped", "localizer"),
        ],
        [],
    ),
    "synthetic 2": (
        [
            (1, "primary", ""),
            (3, "secondary", ""),
            (4, "dropped", "derived"),
            (5, "dropped", "localizer"),
        ],
        [("RTSTRUCT", 7)],
    ),
    "synthetic 3": ([(1, "primary", ""), (5, "dropped", "localizer")], [("SEG", 6)]),
}


def _study_uids(folder: Path) -> dict[str, str]:
    """StudyInstanceUID -> a name, for every study of a folder of real files."""
    names = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        names[ds.StudyInstanceUID] = f"{path.relative_to(folder).parts[0]} {ds.StudyDescription}"
    return names


def _delivery(inbox: Path) -> tuple[dict[str, str], list[SynthStudy]]:
    """The delivery under `inbox`: (original StudyInstanceUID -> study name, the synthetic
    studies)."""
    names: dict[str, str] = {}
    real = inbox / "real"
    for tree in ("77654033", "98892001", "98892003"):
        copy_tree(DICOMDIR_TESTS / tree, real / "dicomdir" / tree)
    names |= _study_uids(real / "dicomdir")
    mosaic(real / "mosaic")
    names[pydicom.dcmread(real / "mosaic" / "0.dcm").StudyInstanceUID] = "mosaic"
    single = ("eCT_Supplemental.dcm", "emri_small.dcm", "MR_small.dcm", "693_J2KR.dcm")
    for name in (*single, "CT_small.dcm"):
        real_file(real / "single" / name, name, name)
        names[uid(f"study {name}")] = name
    real_object(real / "objects", "objects only", "rtstruct.dcm", number=301)
    real_object(real / "objects", "objects only", "liver.dcm", number=302)
    names[uid("study objects only")] = "objects only"
    study = "CT with documents"
    ct_series(real / "documents", study, "axial", 6, spacing_mm=2.5, number=2)
    topogram(real / "documents", study)
    for number, name in enumerate(("test-SR.dcm", "reportsi.dcm", "SC_rgb_rle.dcm"), start=301):
        real_object(real / "documents", study, name, number=number)
    encapsulated_pdf(real / "documents", study)
    names[uid(f"study {study}")] = study
    study = "CT with others' annotations"
    ct_series(real / "annotated", study, "axial", 6, spacing_mm=2.5, number=2)
    real_object(real / "annotated", study, "rtstruct.dcm", number=301)
    real_object(real / "annotated", study, "liver.dcm", number=302)
    names[uid(f"study {study}")] = study
    synthetic = synthesize(inbox / "synthetic", inbox.parent / "synthetic-labels.csv", SYNTH)
    names |= {s.study_uid: f"synthetic {i}" for i, s in enumerate(synthetic)}
    return names, synthetic


def _masks_csv(folder: Path, study: SynthStudy) -> Path:
    """A masks CSV giving `study` its lesion as a NIfTI label map on its primary grid."""
    assert study.truth is not None
    folder.mkdir()
    primary, _ = read_series_with_warnings(list(study.files[: SYNTH.slices]))
    labelmap = sitk.GetImageFromArray(study.truth.mask().astype(np.uint8))
    labelmap.CopyInformation(primary)
    sitk.WriteImage(labelmap, str(folder / "lesion.nii.gz"), useCompression=True)
    (folder / "masks.csv").write_text(f"study_uid,path\n{study.study_uid},lesion.nii.gz\n")
    return folder / "masks.csv"


def _summary() -> str:
    """The newest delivery summary's markdown (the session's other runs write the same key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=50)
    return str(next(a for a in artifacts if a.key == "radflow-delivery-summary").data)


def _outcomes(
    root: Path, lake: Lake, secret: bytes, names: dict[str, str], keys: list[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Study name -> "prepared" or its quarantine reason; and name -> its feature row key."""
    deid_of = {
        json.loads(path.read_text())["study_id"]: str(path.parent.relative_to(root))
        for path in root.glob("deid/*/*/study.json")
    }
    rows = {lake.feature_row(k).deid: k for k in keys}
    outcomes, row_of = {}, {}
    for study_uid, name in names.items():
        deid = deid_of.get(study_pseudonym(secret, study_uid))
        assert deid is not None, f"{name}: not de-identified"
        if deid in rows:
            outcomes[name], row_of[name] = PREPARED, rows[deid]
            continue
        record = lake.quarantined("preprocess", deid)
        outcomes[name] = record.reason if record else "no record"
    return outcomes, row_of


def test_a_delivery_of_real_and_synthetic_studies(
    prefect_server: None, pipeline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingest import ingest
    from tasks.runtime import settings

    monkeypatch.delenv("RADFLOW_PREPROCESS__ROI_SOURCES", raising=False)  # the default
    settings.cache_clear()
    assert settings().preprocess.roi_sources == ("annotation", "model")
    started = time.perf_counter()
    inbox = pipeline_env / "inbox"
    names, synthetic = _delivery(inbox)
    assert sorted(names.values()) == sorted(EXPECTED)

    masks = _masks_csv(pipeline_env / "masks", synthetic[1])
    state = ingest(inbox.as_uri(), "", masks=str(masks), return_state=True)
    assert state.is_completed(), state.message
    keys: list[str] = state.result()
    summary = _summary()
    assert "| failed (an error, not the input: see the failed task runs) | 0 |" in summary
    assert f"| studies seen | {len(EXPECTED)} |" in summary

    root = pipeline_env / "lake"
    lake = Lake(LocalStore(root))
    params = settings().preprocess
    outcomes, row_of = _outcomes(root, lake, settings().pseudonym_secret(), names, keys)
    assert outcomes == EXPECTED
    assert len(keys) == list(EXPECTED.values()).count(PREPARED)

    by_name = {f"synthetic {i}": s for i, s in enumerate(synthetic)}
    for name, source in ROI_SOURCE.items():
        study = by_name[name]
        in_study = source.removeprefix("annotation:").lower()
        assert study.annotation == ("" if in_study == "labelmap" else in_study)
        row = lake.feature_row(row_of[name])
        qc = lake.qc(row.volume)
        assert (qc.roi_source, row.roi_source) == (source, source)
        expected = expected_roi_voxels(study, SYNTH, params)
        assert expected > 20
        assert qc.roi_voxels == expected
        voxel_mm3 = float(np.prod(params.spacing_mm))
        assert row.features["original_shape_VoxelVolume"] / voxel_mm3 == pytest.approx(
            expected, rel=1e-9
        )
        assert qc.selection is not None
        series, objects = SELECTION[name]
        assert [(c.series_number, c.role, c.rule) for c in qc.selection.series] == series
        assert [(o.kind, o.series_number) for o in qc.selection.objects] == objects
        assert len(qc.registration) == sum(role == "secondary" for _, role, _ in series)
        assert qc.warnings == []
    assert time.perf_counter() - started < 90
