"""What kind of annotation a file is, by content: not by its name."""

from __future__ import annotations

import shutil
from pathlib import Path

import SimpleITK as sitk
from support.annotations import liver_seg, rtstruct_file
from support.realdata import pydicom_file, pyradiomics_case

from radflow.annotations import annotation_kind


def test_real_files_by_content(tmp_path: Path) -> None:
    _, label = pyradiomics_case("brain1")
    assert annotation_kind(liver_seg()) == "seg"
    assert annotation_kind(rtstruct_file()) == "rtstruct"  # no Part 10 preamble
    assert annotation_kind(label) == "labelmap"
    assert annotation_kind(pydicom_file("CT_small.dcm")) is None
    assert annotation_kind(tmp_path / "absent.dcm") is None


def test_names_do_not_decide(tmp_path: Path) -> None:
    _, label = pyradiomics_case("brain1")
    shutil.copy(liver_seg(), tmp_path / "liver.nii.gz")
    assert annotation_kind(tmp_path / "liver.nii.gz") == "seg"
    image = sitk.ReadImage(str(label))
    sitk.WriteImage(image, str(tmp_path / "mask.dcm.nii"))
    sitk.WriteImage(image, str(tmp_path / "mask.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "mask.nhdr"))
    for name in ("mask.dcm.nii", "mask.nii.gz", "mask.nhdr"):
        assert annotation_kind(tmp_path / name) == "labelmap", name
    (tmp_path / "notes.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert annotation_kind(tmp_path / "notes.nii.gz") is None
