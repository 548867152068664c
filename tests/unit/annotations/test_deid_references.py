"""De-identification keeps annotations usable: the keyed UID map rewrites a CT series and
the SEG or RTSTRUCT that references it alike, so after `deidentify_bytes` the annotation
still names the de-identified series and instances and still lands on their grid."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from support.annotations import CTSeries, liver_ct, liver_seg, rtstruct_ct, rtstruct_file

from radflow.annotations import check_references, segments_on_grid
from radflow.dicom.batch import deidentify_bytes, read_dicom
from radflow.dicom.deid import DeidConfig, Deidentifier
from radflow.imaging.read import read_series

SECRET = b"annotations-test-secret-0123456789"


def _deidentify(
    files: list[Path], out: Path, options: frozenset[str] = frozenset()
) -> list[tuple[Path, str, str]]:
    """Each file de-identified as the anonymize stage does it: (path, series, SOP UID)."""
    out.mkdir(parents=True, exist_ok=True)
    deid = Deidentifier(DeidConfig(secret=SECRET, options=options))
    written = []
    for i, path in enumerate(files):
        data, ids = deidentify_bytes(read_dicom(path), deid)
        target = out / f"{i:03d}.dcm"
        target.write_bytes(data)
        written.append((target, ids.series_uid, ids.sop_uid))
    return written


def _part10(path: Path, out: Path) -> Path:
    """rtstruct.dcm has no file meta (pydicom reads it with force=True); a delivery's copy
    is a Part 10 file, which is what the anonymize stage reads."""
    ds = pydicom.dcmread(path, force=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(out, enforce_file_format=True)
    return out


def _check(ct: CTSeries, annotation: Path, out: Path, voxels: int) -> None:
    (*images, (annotation_out, _, _)) = _deidentify([*ct.files, annotation], out)
    series = {s for _, s, _ in images}
    assert len(series) == 1 and ct.series_uid not in series  # remapped, one series still
    series_uid = series.pop()
    sops = {sop for _, _, sop in images}
    assert not sops & ct.sop_uids
    raw = annotation_out.read_bytes()
    assert ct.series_uid.encode() not in raw
    assert not any(uid.encode() in raw for uid in ct.sop_uids)
    check_references(annotation_out, series_uid, sops)
    reference = read_series([path for path, _, _ in images])
    (segment, *_) = segments_on_grid(annotation_out, reference)
    assert segment.voxels == voxels


def test_a_seg_still_references_and_fits_its_series_after_deid(tmp_path: Path) -> None:
    _check(liver_ct(tmp_path / "ct"), liver_seg(), tmp_path / "deid", 107098)


def test_an_rtstruct_still_references_and_fits_its_series_after_deid(tmp_path: Path) -> None:
    rt = _part10(rtstruct_file(), tmp_path / "rtstruct.dcm")
    _check(rtstruct_ct(tmp_path / "ct"), rt, tmp_path / "deid", 360000)


def test_the_basic_profile_empties_roi_names(tmp_path: Path) -> None:
    """PS3.15 Table E.1-1 says Z for ROI Name: after de-identification an RTSTRUCT's ROIs
    are known by number ("ROI 1"); a label in the ROI selection no longer matches."""
    ct = rtstruct_ct(tmp_path / "ct")
    rt = _part10(rtstruct_file(), tmp_path / "rtstruct.dcm")
    (*images, (out, _, _)) = _deidentify([*ct.files, rt], tmp_path / "deid")
    ds = pydicom.dcmread(out)
    assert all(not roi.get("ROIName") for roi in ds.StructureSetROISequence)
    (segment,) = segments_on_grid(out, read_series([p for p, _, _ in images]))
    assert (segment.number, segment.label) == (1, "ROI 1")


def test_clean_descriptors_keeps_roi_names_for_selection(tmp_path: Path) -> None:
    """With the Clean Descriptors option ROI Name is cleaned (C), not emptied: the name
    survives (scrubbed of the patient's own words) and selection by label works."""
    ct = rtstruct_ct(tmp_path / "ct")
    rt = _part10(rtstruct_file(), tmp_path / "rtstruct.dcm")
    (*images, (out, _, _)) = _deidentify(
        [*ct.files, rt], tmp_path / "deid", frozenset({"clean_descriptors"})
    )
    (segment,) = segments_on_grid(out, read_series([p for p, _, _ in images]))
    assert (segment.number, segment.label) == (1, "patient")
