"""The synthetic studies are what every downstream test stands on, so check them as DICOM
(pydicom and SimpleITK both read them), as images (geometry, HU, a findable lesion, a known
motion between series), as PHI carriers, and as a deterministic function of the spec."""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radflow.errors import ConfigError
from radflow.synth import CT_IMAGE_STORAGE, SynthSpec, SynthStudy, synthesize

SPEC = SynthSpec(studies=6, rows=32, columns=40, slices=12, pixel_spacing=0.9, slice_thickness=2.0)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SynthStudy]]:
    root = tmp_path_factory.mktemp("synth")
    return root, synthesize(root / "inbox", root / "labels.csv", SPEC)


def _hashes(inbox: Path) -> dict[str, str]:
    return {
        p.relative_to(inbox).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(inbox.rglob("*"))
        if p.is_file()
    }


def _series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _bright(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Raw HU and the ROI rule's mask: voxels above 80 HU after 1 mm smoothing."""
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), 1.0)
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(smooth) > 80


def test_every_file_is_ct_dicom_in_the_layout(made: tuple[Path, list[SynthStudy]]) -> None:
    root, studies = made
    inbox = root / "inbox"
    written = {p for s in studies for p in s.files}
    assert written == set(inbox.rglob("*.dcm"))
    assert len(written) == sum(len(s.series_uids) for s in studies) * SPEC.slices
    sop_uids: set[str] = set()
    for study in studies:
        frames = set()
        for path in study.files:
            ds = pydicom.dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            sop_uids.add(ds.SOPInstanceUID)
            frames.add(ds.FrameOfReferenceUID)
            assert ds.Modality == "CT" and ds.StudyInstanceUID == study.study_uid
            assert ds.SeriesInstanceUID == study.series_uids[ds.SeriesNumber - 1]
            rel = path.relative_to(inbox).as_posix()
            expected = f"{ds.PatientID}/{ds.AccessionNumber}/S{ds.SeriesNumber}"
            assert rel == f"{expected}/IM{ds.InstanceNumber:04d}.dcm"
            assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (SPEC.rows, SPEC.columns, 1)
            assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 12, 0)
            assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, -1024)
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            z = (ds.InstanceNumber - 1 - (SPEC.slices - 1) / 2) * SPEC.slice_thickness
            assert float(ds.ImagePositionPatient[2]) == pytest.approx(z)
            assert float(ds.SpacingBetweenSlices) == float(ds.SliceThickness) == 2.0
            pixels = ds.pixel_array
            assert pixels.dtype == np.uint16 and pixels.max() < 4096
        assert len(frames) == 1
    assert len(sop_uids) == len(written)
    assert all(re.fullmatch(r"2\.25\.\d{1,39}", u) for u in sop_uids)


def test_series_geometry_hu_and_lesion(made: tuple[Path, list[SynthStudy]]) -> None:
    _, studies = made
    spreads: dict[int, list[float]] = {0: [], 1: []}
    for study in studies:
        for folder in sorted({p.parent for p in study.files}):
            image = _series(folder)
            first = pydicom.dcmread(folder / "IM0001.dcm")
            assert image.GetSize() == (SPEC.columns, SPEC.rows, SPEC.slices)
            expected = (SPEC.pixel_spacing, SPEC.pixel_spacing, SPEC.slice_thickness)
            np.testing.assert_allclose(image.GetSpacing(), expected, atol=1e-6)
            np.testing.assert_allclose(
                image.GetOrigin(), [float(v) for v in first.ImagePositionPatient]
            )
            np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-9)
            hu, bright = _bright(image)
            assert hu[0, 0, 0] == hu[-1, -1, -1] == -1000
            assert hu.min() >= -1000 and hu.max() < 1000
            # One bright blob, near the centre and clear of every face of the volume.
            labels = sitk.GetArrayFromImage(
                sitk.ConnectedComponent(sitk.GetImageFromArray(bright.astype(np.uint8)))
            )
            assert labels.max() == 1
            for axis in range(3):
                assert not np.take(bright, [0, -1], axis=axis).any()
            near = sitk.BinaryDilate(sitk.GetImageFromArray(bright.astype(np.uint8)), [2, 2, 2])
            body = hu[(hu > -500) & (sitk.GetArrayFromImage(near) == 0)]
            assert 20 < np.median(body) < 60 and np.percentile(body, 99) < 80
            if folder.name == "S1":  # the centre is in the lesion; S2 is moved by a few mm
                z, y, x = (np.array(bright.shape) - 1) // 2
                assert bright[z : z + 2, y : y + 2, x : x + 2].all()
                q1, q3 = np.percentile(hu[bright], [25, 75])
                spreads[study.label].append(float(q3 - q1) / 1.35)  # a robust SD
    # Label 0 lesions are homogeneous, label 1 lesions heterogeneous: a model can learn that.
    assert max(spreads[0]) < 10 and min(spreads[1]) > 15, spreads


def test_second_series_is_the_primary_moved_by_the_stated_motion(
    made: tuple[Path, list[SynthStudy]],
) -> None:
    _, studies = made
    two = [s for s in studies if len(s.series_uids) == 2]
    assert two
    for study in two:
        s1, s2 = sorted({p.parent for p in study.files})
        a, b = pydicom.dcmread(s1 / "IM0003.dcm"), pydicom.dcmread(s2 / "IM0003.dcm")
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows"):
            assert a[key].value == b[key].value
        assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
        assert a.SeriesInstanceUID != b.SeriesInstanceUID
        found = re.search(
            r"rz=([-+.\d]+)deg t=\(([-+.\d]+),([-+.\d]+),([-+.\d]+)\)mm", b.ImageComments
        )
        assert found is not None
        angle, tx, ty, tz = (float(v) for v in found.groups())
        assert 2 <= abs(angle) <= 5 and max(abs(tx), abs(ty), abs(tz)) <= 4
        motion = sitk.Euler3DTransform((0, 0, 0), 0, 0, np.deg2rad(angle), (tx, ty, tz))
        centroids = []
        for folder in (s1, s2):
            image = _series(folder)
            _, bright = _bright(image)
            mask = sitk.GetImageFromArray(bright.astype(np.uint8))
            mask.CopyInformation(image)
            stats = sitk.LabelShapeStatisticsImageFilter()
            stats.Execute(mask)
            centroids.append(np.array(stats.GetCentroid(1)))
        np.testing.assert_allclose(
            motion.TransformPoint(tuple(centroids[0])), centroids[1], atol=1.0
        )


def test_labels_csv_matches_the_files(made: tuple[Path, list[SynthStudy]]) -> None:
    root, studies = made
    with open(root / "labels.csv", newline="") as f:
        assert f.readline() == "study_uid,label\n"
        f.seek(0)
        rows = list(csv.DictReader(f))
    assert len(rows) == SPEC.studies
    assert [r["study_uid"] for r in rows] == sorted(r["study_uid"] for r in rows)
    in_files = {
        str(pydicom.dcmread(s.files[0], stop_before_pixels=True).StudyInstanceUID) for s in studies
    }
    assert {r["study_uid"] for r in rows} == in_files
    assert {r["study_uid"]: int(r["label"]) for r in rows} == {
        s.study_uid: s.label for s in studies
    }
    assert {s.label for s in studies} == {0, 1}


def test_variety_repeat_patients_and_second_series(made: tuple[Path, list[SynthStudy]]) -> None:
    _, studies = made
    assert any(len(s.series_uids) == 2 for s in studies)
    assert any(len(s.series_uids) == 1 for s in studies)
    patients = [s.patient_id for s in studies]
    repeat = next(p for p in patients if patients.count(p) == 2)
    first, second = (
        pydicom.dcmread(s.files[0], stop_before_pixels=True)
        for s in studies
        if s.patient_id == repeat
    )
    assert (
        first.PatientName == second.PatientName
        and first.PatientBirthDate == second.PatientBirthDate
    )
    assert first.AccessionNumber != second.AccessionNumber
    assert first.StudyDate < second.StudyDate
    assert len({s.study_uid for s in studies}) == len(studies)


def test_phi_in_headers_and_free_text(made: tuple[Path, list[SynthStudy]]) -> None:
    _, studies = made
    for study in studies:
        ds = pydicom.dcmread(study.files[-1], stop_before_pixels=True)
        family, given, _ = str(ds.PatientName).split("^")
        assert re.fullmatch(r"MRN\d{7}", ds.PatientID) and ds.PatientID == study.patient_id
        assert re.fullmatch(r"(19|20)\d{6}", ds.PatientBirthDate) and ds.PatientSex in ("F", "M")
        assert re.fullmatch(r"\d{3}Y", ds.PatientAge)
        for key in (
            "AccessionNumber", "StudyDate", "StudyTime", "SeriesDate", "AcquisitionDate",
            "ContentDate", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
            "PerformingPhysicianName", "OperatorsName", "StationName", "DeviceSerialNumber",
            "StudyID",
        ):  # fmt: skip
            assert str(ds.get(key, "")).strip(), key
        assert ds.PatientID in ds.StudyDescription and family in ds.StudyDescription
        assert f"{family} {given}" in ds.SeriesDescription
        assert ds.PatientID in ds.ImageComments
        assert ds.PatientID in study.files[0].parts and ds.AccessionNumber in study.files[0].parts


def test_same_spec_same_bytes_other_seed_other_uids(
    made: tuple[Path, list[SynthStudy]], tmp_path: Path
) -> None:
    root, studies = made
    again = synthesize(tmp_path / "a" / "inbox", tmp_path / "a" / "labels.csv", SPEC)
    assert _hashes(tmp_path / "a" / "inbox") == _hashes(root / "inbox")
    assert (tmp_path / "a" / "labels.csv").read_bytes() == (root / "labels.csv").read_bytes()
    assert [(s.study_uid, s.label, s.series_uids) for s in again] == [
        (s.study_uid, s.label, s.series_uids) for s in studies
    ]
    # Study i does not depend on how many studies are made.
    fewer = replace(SPEC, studies=2)
    synthesize(tmp_path / "b" / "inbox", tmp_path / "b" / "labels.csv", fewer)
    prefix = _hashes(tmp_path / "b" / "inbox")
    assert prefix.items() <= _hashes(root / "inbox").items()
    other = replace(SPEC, studies=2, seed=1)
    moved = synthesize(tmp_path / "c" / "inbox", tmp_path / "c" / "labels.csv", other)
    assert not {s.study_uid for s in moved} & {s.study_uid for s in studies}
    assert not {s.series_uids[0] for s in moved} & {s.series_uids[0] for s in studies}


@pytest.mark.parametrize(
    "bad", [{"rows": 4}, {"slices": 2}, {"studies": 0}, {"pixel_spacing": 0.0}]
)
def test_bad_spec_is_a_config_error(bad: dict[str, Any], tmp_path: Path) -> None:
    spec = replace(SPEC, **bad)
    with pytest.raises(ConfigError):
        synthesize(tmp_path / "inbox", tmp_path / "labels.csv", spec)
    assert not (tmp_path / "inbox").exists()
