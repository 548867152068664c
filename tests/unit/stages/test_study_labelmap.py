"""A label map given with `ingest --masks` is one of its study's raw files: fetch adds it to
the study (so the study's reference and its de-identified address follow the map and its
label), anonymize writes it into the de-identified study as voxels and geometry alone."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from support.annotations import CTSeries, liver_ct, liver_seg, write_ct_series

from radflow.annotations.masks_csv import MaskEntry
from radflow.config import load_settings
from radflow.errors import QuarantineError
from radflow.imaging.read import read_series
from radflow.lake import Lake
from radflow.stages.anonymize import anonymize_study
from radflow.stages.fetch import fetch_delivery
from radflow.store import LocalStore

SECRET = "labelmap-secret-" + "0123456789abcdef" * 2
PHI_TEXT = "Doe^Jane 1961"


def _ct(inbox: Path, name: str = "PATIENT-A") -> CTSeries:
    return write_ct_series(
        inbox / name / "CT",
        rows=12,
        columns=10,
        pixel_spacing=(0.8, 0.7),
        positions=[(-4.0, -5.0, 2.5 * k) for k in range(6)],
    )


def _labels() -> np.ndarray:
    """(z, y, x) on the CT's grid: 7 voxels of label 1, 4 of label 2."""
    labels = np.zeros((6, 12, 10), np.uint8)
    labels[2, 3:5, 4:7] = 1  # 6 voxels
    labels[3, 4, 5] = 1
    labels[4, 6:8, 2:4] = 2
    return labels


def _write_labelmap(path: Path, ct: CTSeries, labels: np.ndarray) -> Path:
    """A NIfTI on the CT's grid whose header text holds what a hospital's tool may put
    there (names, dates)."""
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(read_series(list(ct.files)))
    sitk.WriteImage(image, str(path))
    nifti = nib.load(path)
    nifti.header["descrip"] = PHI_TEXT.encode()
    nifti.header["aux_file"] = b"Doe^Jane"
    nib.save(nib.Nifti1Image(np.asanyarray(nifti.dataobj), nifti.affine, nifti.header), path)
    assert nib.load(path).header["descrip"].tobytes().rstrip(b"\0") == PHI_TEXT.encode()
    return path


def _ingest(tmp: Path, inbox: Path, masks: list[MaskEntry]) -> tuple[Lake, str, list[str]]:
    """fetch + anonymize of a one-study delivery; (lake, deid address, study refs)."""
    config = load_settings(secret=SECRET).deid_config()
    lake = Lake(LocalStore(tmp / "lake"))
    fetched = fetch_delivery(LocalStore(inbox), "", tmp / "cache", masks=masks)
    assert fetched.quarantined == []
    (ref,) = fetched.studies
    return lake, anonymize_study(lake, tmp / "cache", ref, config, tmp / "reid"), fetched.studies


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, CTSeries, Path]:
    inbox = tmp_path / "inbox"
    ct = _ct(inbox)
    return inbox, ct, _write_labelmap(tmp_path / "mask.nii.gz", ct, _labels())


def test_the_deidentified_study_holds_the_map_voxels_and_geometry_only(
    tmp_path: Path, study: tuple[Path, CTSeries, Path]
) -> None:
    inbox, ct, mask = study
    lake, deid, _ = _ingest(tmp_path, inbox, [MaskEntry(ct.study_uid, mask)])
    stored = lake.study_labelmap(deid, tmp_path)
    assert stored is not None and stored.name == "labelmap.nii.gz"
    image = sitk.ReadImage(str(stored))
    assert np.array_equal(sitk.GetArrayFromImage(image), _labels())
    reference = read_series(list(ct.files))
    assert image.GetSize() == reference.GetSize() == (10, 12, 6)
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetSpacing(), (0.7, 0.8, 2.5), atol=1e-6)
    assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    header = nib.load(stored).header
    assert header["descrip"].tobytes().strip(b"\0") == b""
    assert header["aux_file"].tobytes().strip(b"\0") == b""
    assert b"Doe" not in stored.read_bytes() and b"Doe" not in _gunzip(stored)
    assert lake.has(deid) and [s.modality for s in lake.manifest(deid).series] == ["CT"]


def _gunzip(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes())


def test_a_label_keeps_that_label_alone_as_one(
    tmp_path: Path, study: tuple[Path, CTSeries, Path]
) -> None:
    inbox, ct, mask = study
    lake, deid, _ = _ingest(tmp_path, inbox, [MaskEntry(ct.study_uid, mask, "2")])
    stored = lake.study_labelmap(deid, tmp_path)
    assert stored is not None
    values = sitk.GetArrayFromImage(sitk.ReadImage(str(stored)))
    assert np.array_equal(values, (_labels() == 2).astype(np.uint8))
    assert int(values.sum()) == 4


def test_the_address_follows_the_map_and_its_label_and_nothing_else(
    tmp_path: Path, study: tuple[Path, CTSeries, Path]
) -> None:
    inbox, ct, mask = study
    _, plain, _ = _ingest(tmp_path / "none", inbox, [])
    _, first, _ = _ingest(tmp_path / "a", inbox, [MaskEntry(ct.study_uid, mask)])
    _, again, _ = _ingest(tmp_path / "b", inbox, [MaskEntry(ct.study_uid, mask)])
    copy = tmp_path / "elsewhere" / "same.nii.gz"
    copy.parent.mkdir()
    copy.write_bytes(mask.read_bytes())
    _, moved, _ = _ingest(tmp_path / "c", inbox, [MaskEntry(ct.study_uid, copy)])
    _, labelled, _ = _ingest(tmp_path / "d", inbox, [MaskEntry(ct.study_uid, mask, "1")])
    changed = _labels()
    changed[5, 0, 0] = 1
    other = _write_labelmap(tmp_path / "changed.nii.gz", ct, changed)
    _, edited, _ = _ingest(tmp_path / "e", inbox, [MaskEntry(ct.study_uid, other)])
    assert first == again == moved  # the map's content counts, not where it lies
    assert len({plain, first, labelled, edited}) == 4
    lake = Lake(LocalStore(tmp_path / "none" / "lake"))
    assert lake.study_labelmap(plain, tmp_path) is None


def test_rows_of_studies_not_in_the_delivery_are_counted(
    tmp_path: Path, study: tuple[Path, CTSeries, Path]
) -> None:
    inbox, _, mask = study
    _, plain, _ = _ingest(tmp_path / "none", inbox, [])
    rows = [MaskEntry("1.2.3.4", mask), MaskEntry("1.2.3.5", mask, "1")]
    fetched = fetch_delivery(LocalStore(inbox), "", tmp_path / "cache", masks=rows)
    assert fetched.masks_without_study == 2 and fetched.masks_of_another_study == 0
    config = load_settings(secret=SECRET).deid_config()
    (ref,) = fetched.studies
    lake = Lake(LocalStore(tmp_path / "lake"))
    deid = anonymize_study(lake, tmp_path / "cache", ref, config, tmp_path / "reid")
    assert deid == plain


def test_a_label_missing_from_the_map_quarantines_the_study(
    tmp_path: Path, study: tuple[Path, CTSeries, Path]
) -> None:
    inbox, ct, mask = study
    with pytest.raises(QuarantineError) as caught:
        _ingest(tmp_path, inbox, [MaskEntry(ct.study_uid, mask, "3")])
    assert (caught.value.reason, caught.value.detail) == (
        "label not in the label map",
        "no voxel has label 3",
    )
    written = [o.key for o in LocalStore(tmp_path / "lake").list("deid/")]
    assert written and not any(k.endswith("study.json") for k in written)  # not committed


def test_a_seg_row_joins_its_study_as_a_dicom_object(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    ct = liver_ct(inbox / "LIVER")
    lake, deid, _ = _ingest(tmp_path, inbox, [MaskEntry(ct.study_uid, liver_seg())])
    modalities = sorted(s.modality for s in lake.manifest(deid).series)
    assert modalities == ["CT", "SEG"]
    assert lake.study_labelmap(deid, tmp_path) is None
    (seg,) = [s for s in lake.manifest(deid).series if s.modality == "SEG"]
    (key,) = lake.instances(deid, seg.series_uid)
    lake.download(key, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert str(ds.StudyInstanceUID) != ct.study_uid  # de-identified with the study


def test_a_seg_row_the_delivery_holds_already_changes_nothing(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    ct = liver_ct(inbox / "LIVER")
    (inbox / "LIVER" / "SEG").mkdir()
    (inbox / "LIVER" / "SEG" / "seg.dcm").write_bytes(liver_seg().read_bytes())
    plain = fetch_delivery(LocalStore(inbox), "", tmp_path / "cache")
    row = [MaskEntry(ct.study_uid, liver_seg())]
    listed = fetch_delivery(LocalStore(inbox), "", tmp_path / "cache", masks=row)
    assert listed.studies == plain.studies and listed.quarantined == []


def test_a_seg_row_of_another_study_is_counted_not_used(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    ct = _ct(inbox)
    fetched = fetch_delivery(
        LocalStore(inbox), "", tmp_path / "cache", masks=[MaskEntry(ct.study_uid, liver_seg())]
    )
    assert fetched.masks_of_another_study == 1 and fetched.masks_without_study == 0
    plain = fetch_delivery(LocalStore(inbox), "", tmp_path / "cache2")
    assert fetched.studies == plain.studies


def test_the_fetch_tasks_cache_key_sees_the_masks(
    tmp_path: Path, study: tuple[Path, CTSeries, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect's cache key of fetch: a changed map or label must not return the old
    references; the key holds no original UID."""
    from tasks import fetch as fetch_task
    from tasks import runtime

    inbox, ct, mask = study
    monkeypatch.setenv("RADFLOW_SECRET", SECRET)
    monkeypatch.setenv("RADFLOW_CACHE_DIR", str(tmp_path / "cache"))
    runtime.settings.cache_clear()

    def key(rows: str) -> str:
        csv = tmp_path / "masks.csv"
        csv.write_text(f"study_uid,path,label\n{rows}\n")
        return fetch_task._fetch_key(inbox.as_uri(), "", str(csv))

    try:
        plain = fetch_task._fetch_key(inbox.as_uri(), "", "")
        whole = key(f"{ct.study_uid},{mask},")
        assert key(f"{ct.study_uid},{mask},") == whole
        labelled = key(f"{ct.study_uid},{mask},2")
        changed = _labels()
        changed[0, 0, 0] = 1
        _write_labelmap(mask, ct, changed)
        edited = key(f"{ct.study_uid},{mask},")
    finally:
        runtime.settings.cache_clear()
    assert len({plain, whole, labelled, edited}) == 4
    assert not any(ct.study_uid in k for k in (whole, labelled, edited))
