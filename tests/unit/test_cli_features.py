"""`radflow features IMAGE --mask MASK [--label N] [--json]` on real files: pyradiomics'
lung1 CT (NRRD) and pydicom's CT5N series (a DICOM folder)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from support.annotations import (
    liver_ct,
    liver_seg,
    rtstruct_ct,
    rtstruct_file,
    write_ct_series,
    write_seg,
)
from support.realdata import pydicom_file, pyradiomics_baseline, pyradiomics_case
from typer.testing import CliRunner

from radflow.cli import app
from radflow.features.inputs import load_image

runner = CliRunner()


@pytest.fixture(scope="module")
def lung1() -> tuple[Path, Path]:
    return pyradiomics_case("lung1")


@pytest.fixture(scope="module")
def lung1_json(lung1: tuple[Path, Path]) -> dict[str, float]:
    image, mask = lung1
    result = runner.invoke(app, ["features", str(image), "--mask", str(mask), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    values: dict[str, float] = json.loads(result.stdout)  # stdout holds the object alone
    return values


def test_json_is_the_feature_row_of_lung1(lung1_json: dict[str, float]) -> None:
    assert len(lung1_json) == 18 + 14 + 24 + 16 + 16 + 14 + 5
    voxel = 0.5703125 * 0.5703125 * 5.0  # mm^3, from the NRRD header
    assert lung1_json["original_shape_VoxelVolume"] / voxel == pytest.approx(837, abs=1e-9)
    shape = pyradiomics_baseline("shape")["lung1"]
    glcm = pyradiomics_baseline("glcm")["lung1"]
    first = pyradiomics_baseline("firstorder")["lung1"]
    for name, baseline in (
        ("original_shape_Sphericity", shape),
        ("original_shape_Maximum3DDiameter", shape),
        ("original_glcm_MCC", glcm),
        ("original_firstorder_RobustMeanAbsoluteDeviation", first),
        ("original_firstorder_Mean", first),
    ):
        assert lung1_json[name] == pytest.approx(float(baseline[name]), rel=1e-6), name


def test_table_is_grouped_by_class(lung1: tuple[Path, Path]) -> None:
    image, mask = lung1
    result = runner.invoke(app, ["features", str(image), "--mask", str(mask)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("837 voxels, bin width 25")
    titles = [line.strip() for line in out.splitlines() if line.strip().isalpha()]
    assert titles == ["firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm"]
    assert "Sphericity" in out and "MeshVolume" in out


def _mask_like(reference: Path, array: np.ndarray, path: Path, shift: float = 0.0) -> Path:
    like = sitk.ReadImage(str(reference))
    out = sitk.GetImageFromArray(array)
    out.SetSpacing(like.GetSpacing())
    out.SetDirection(like.GetDirection())
    x, y, z = like.GetOrigin()
    out.SetOrigin((x + shift, y, z))
    sitk.WriteImage(out, str(path), useCompression=True)
    return path


def _labels(lung1: tuple[Path, Path]) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(lung1[1]))).astype(np.uint8)


def test_a_mask_off_the_grid_is_one_line_with_the_offset(
    lung1: tuple[Path, Path], tmp_path: Path
) -> None:
    shifted = _mask_like(lung1[1], _labels(lung1), tmp_path / "shifted.nii.gz", shift=1.5)
    result = runner.invoke(app, ["features", str(lung1[0]), "--mask", str(shifted)])
    assert result.exit_code == 2
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: mask not on the image's grid: its voxels lie up to 1.500 mm")
    assert "Traceback" not in result.output


def test_several_labels_need_label(lung1: tuple[Path, Path], tmp_path: Path) -> None:
    labels = _labels(lung1)
    labels[20, 100:104, 100:105] = 3  # a second region of 20 voxels, away from the nodule
    path = _mask_like(lung1[1], labels, tmp_path / "two.nrrd")
    result = runner.invoke(app, ["features", str(lung1[0]), "--mask", str(path), "--json"])
    assert result.exit_code == 2
    assert "several labels in the mask: labels 1, 3" in result.stderr
    chosen = runner.invoke(
        app, ["features", str(lung1[0]), "--mask", str(path), "--label", "3", "--json"]
    )
    assert chosen.exit_code == 0, chosen.output
    values = json.loads(chosen.stdout)
    voxel = 0.5703125 * 0.5703125 * 5.0
    assert values["original_shape_VoxelVolume"] / voxel == pytest.approx(20, abs=1e-9)
    assert all(v is None or math.isfinite(v) for v in values.values())


def test_a_missing_file_is_named(lung1: tuple[Path, Path], tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["features", str(lung1[0]), "--mask", str(tmp_path / "nope.nii.gz")]
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: no MASK at {tmp_path / 'nope.nii.gz'}",
        "hint: give a .nii(.gz), .nrrd/.nhdr or a DICOM folder",
    ]


def test_a_dicom_series_folder_with_a_nifti_mask(tmp_path: Path) -> None:
    """pydicom's real 5-slice CT series as IMAGE, a NIfTI label map written on its grid."""
    folder = pydicom_file("dicomdirtests/98892001/CT5N/2062").parent
    image = load_image(folder)
    labels = np.zeros((5, 16, 16), np.uint8)
    labels[1:4, 4:10, 5:12] = 1  # 126 voxels
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(tmp_path / "roi.nii.gz"))
    result = runner.invoke(
        app, ["features", str(folder), "--mask", str(tmp_path / "roi.nii.gz"), "--json"]
    )
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    voxel = math.prod(image.GetSpacing())
    assert values["original_shape_VoxelVolume"] / voxel == pytest.approx(126, abs=1e-9)
    inside = sitk.GetArrayFromImage(image)[labels == 1].astype(np.float64)
    assert values["original_firstorder_Mean"] == pytest.approx(float(inside.mean()), rel=1e-9)


def _voxels(values: dict[str, float], image: sitk.Image) -> float:
    return values["original_shape_VoxelVolume"] / math.prod(image.GetSpacing())


def test_a_real_seg_as_the_mask(tmp_path: Path) -> None:
    """pydicom-data's liver.dcm on the CT rebuilt on its grid: the region is the SEG's own
    voxels, counted here from pydicom's unpacking of its frames (independent of highdicom)."""
    ct = liver_ct(tmp_path / "ct")
    result = runner.invoke(app, ["features", str(ct.folder), "--mask", str(liver_seg()), "--json"])
    assert result.exit_code == 0, result.output
    frames = pydicom.dcmread(liver_seg()).pixel_array
    assert int(frames.sum()) == 107098
    voxels = _voxels(json.loads(result.stdout), load_image(ct.folder))
    assert voxels == pytest.approx(107098, abs=1e-6)


def test_several_segments_need_the_segment_number(tmp_path: Path) -> None:
    ct = write_ct_series(
        tmp_path / "ct",
        rows=32,
        columns=40,
        pixel_spacing=(0.7, 0.8),
        positions=[(-10.0, -20.0, 2.5 * k - 3.0) for k in range(8)],
    )
    labels = np.zeros((8, 32, 40), np.uint8)
    labels[2:5, 5:12, 7:20] = 1  # 273 voxels
    labels[3, 20:25, 30:33] = 2  # 15 voxels
    seg = write_seg(tmp_path / "seg.dcm", ct, labels)
    both = runner.invoke(app, ["features", str(ct.folder), "--mask", str(seg), "--json"])
    assert both.exit_code == 2
    assert both.stderr.splitlines()[0] == (
        "error: several segments in the mask: segments 1 (segment 1), 2 (segment 2);"
        " choose one (--label N)"
    )
    image = load_image(ct.folder)
    for number, expected in ((1, 273), (2, 15)):
        chosen = runner.invoke(
            app,
            ["features", str(ct.folder), "--mask", str(seg), "--label", str(number), "--json"],
        )
        assert chosen.exit_code == 0, chosen.output
        assert _voxels(json.loads(chosen.stdout), image) == pytest.approx(expected, abs=1e-6)
    missing = runner.invoke(
        app, ["features", str(ct.folder), "--mask", str(seg), "--label", "3", "--json"]
    )
    assert missing.exit_code == 2
    assert "segment not in the mask: no segment 3; the mask holds 1 (segment 1), 2" in (
        missing.stderr
    )


def test_a_real_rtstruct_as_the_mask(tmp_path: Path) -> None:
    """pydicom's rtstruct.dcm on the grid its rectangles fill: ROI 1 covers 400 x 300 voxel
    centres on each of its three planes (1 mm pixels, centres between whole mm)."""
    ct = rtstruct_ct(tmp_path / "ct")
    result = runner.invoke(
        app,
        ["features", str(ct.folder), "--mask", str(rtstruct_file()), "--label", "1", "--json"],
    )
    assert result.exit_code == 0, result.output
    voxels = _voxels(json.loads(result.stdout), load_image(ct.folder))
    assert voxels == pytest.approx(3 * 400 * 300, abs=1e-6)
