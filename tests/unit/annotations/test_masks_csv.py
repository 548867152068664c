"""The masks CSV: each mistake a user makes in a spreadsheet gets its line and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.annotations import liver_seg
from support.realdata import pyradiomics_case

from radflow.annotations.masks_csv import MaskEntry, MasksCsvError, read_masks_csv

STUDY_A = "1.2.826.0.1.3680043.8.498.1"
STUDY_B = "1.2.826.0.1.3680043.8.498.2"


def _csv(folder: Path, text: str, *, bom: bool = False) -> Path:
    path = folder / "masks.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _, label = pyradiomics_case("lung1")
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "lung1.nrrd").write_bytes(label.read_bytes())
    return tmp_path


def test_rows_resolve_relative_to_the_csv_and_keep_labels(folder: Path) -> None:
    path = _csv(
        folder,
        f"study_uid,path,label\n{STUDY_A},masks/lung1.nrrd,1\n\n{STUDY_B},{liver_seg()},\n",
    )
    assert read_masks_csv(path) == [
        MaskEntry(STUDY_A, folder / "masks" / "lung1.nrrd", "1"),
        MaskEntry(STUDY_B, liver_seg(), None),
    ]


def test_the_label_column_is_optional(folder: Path) -> None:
    path = _csv(folder, f"study_uid,path\n{STUDY_A},masks/lung1.nrrd\n")
    assert read_masks_csv(path) == [MaskEntry(STUDY_A, folder / "masks" / "lung1.nrrd")]


@pytest.mark.parametrize(
    ("text", "bom", "message", "hint"),
    [
        (
            f"StudyInstanceUID,mask\n{STUDY_A},masks/lung1.nrrd\n",
            False,
            "masks CSV line 1: the columns are 'StudyInstanceUID,mask', expected"
            " study_uid,path or study_uid,path,label",
            "study_uid,path",
        ),
        ("", False, "masks CSV line 1: no header", "study_uid,path"),
        (
            f"study_uid,path\n{STUDY_A},masks/lung1.nrrd\n{STUDY_B},masks/missing.nii.gz\n",
            False,
            "masks CSV line 3: the mask file does not exist",
            "relative to the CSV's folder",
        ),
        (
            f"study_uid,path\n{STUDY_A},masks/lung1.nrrd\n{STUDY_A},masks/lung1.nrrd\n",
            False,
            "masks CSV line 3: the study of line 2 again",
            "one row per study",
        ),
        (
            "study_uid,path\nPatient Name,masks/lung1.nrrd\n",
            False,
            "masks CSV line 2: study_uid is not a DICOM UID",
            "digits and dots",
        ),
        (
            f"study_uid,path,label\n{STUDY_A},masks/lung1.nrrd\n",
            False,
            "masks CSV line 2: 2 columns where the header has 3",
            "",
        ),
        (
            f"study_uid,path\n{STUDY_A},masks.csv\n",
            False,
            "masks CSV line 2: the file is not a SEG, RTSTRUCT or label map",
            "NIfTI",
        ),
        (
            f"study_uid,path,label\n{STUDY_A},masks/lung1.nrrd,Tumour\n",
            False,
            "masks CSV line 2: a label map's label must be a positive whole number",
            "voxel value",
        ),
        (
            f"study_uid,path,label\n{STUDY_B},{liver_seg()},Liver\n",
            False,
            "masks CSV line 2: a label is given for a SEG or RTSTRUCT",
            "RADFLOW_PREPROCESS__ROI_SEGMENT__LABEL",
        ),
    ],
    ids=[
        "header",
        "empty",
        "missing",
        "duplicate",
        "uid",
        "columns",
        "kind",
        "label-word",
        "seg-label",
    ],
)
def test_mistakes_name_the_line_and_say_what_to_do(
    folder: Path, text: str, bom: bool, message: str, hint: str
) -> None:
    with pytest.raises(MasksCsvError) as caught:
        read_masks_csv(_csv(folder, text, bom=bom))
    assert str(caught.value) == message
    assert hint in caught.value.hint
    assert STUDY_A not in str(caught.value) and "lung1" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "bom"),
    [
        (f"study_uid,path\r\n{STUDY_A},masks/lung1.nrrd\r\n", True),
        (f"Study_UID;Path\n{STUDY_A};masks/lung1.nrrd\n", False),
        (f"study_uid\tpath\n\n{STUDY_A}\tmasks/lung1.nrrd\n\n\n", False),
    ],
    ids=["excel-bom-crlf", "semicolons", "tabs"],
)
def test_spreadsheet_variants_read_as_the_plain_csv(folder: Path, text: str, bom: bool) -> None:
    assert read_masks_csv(_csv(folder, text, bom=bom)) == [
        MaskEntry(STUDY_A, folder / "masks" / "lung1.nrrd")
    ]


@pytest.mark.parametrize("label", ["2", "label 2", " 02 "])
def test_a_label_maps_label_is_its_value(folder: Path, label: str) -> None:
    path = _csv(folder, f"study_uid,path,label\n{STUDY_A},masks/lung1.nrrd,{label}\n")
    assert read_masks_csv(path) == [MaskEntry(STUDY_A, folder / "masks" / "lung1.nrrd", "2")]


def test_a_missing_csv_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MasksCsvError, match="no masks CSV"):
        read_masks_csv(tmp_path / "nope.csv")
