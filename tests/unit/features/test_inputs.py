"""Images and masks from files: formats, the grid check, labels (real files where possible)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from support.realdata import pyradiomics_case

from radflow.errors import NotFoundError, QuarantineError
from radflow.features.inputs import (
    GRID_TOLERANCE_MM,
    crop_to_mask,
    grid_offset_mm,
    load_image,
    load_mask,
)


def _ct5n() -> Path:
    """pydicom's real 5-slice CT series (16 x 16 pixels), a folder of five files."""
    any_file = get_testdata_file("dicomdirtests/98892001/CT5N/2062", download=False)
    assert any_file is not None
    return Path(str(any_file)).parent


@pytest.fixture(scope="module")
def breast1() -> tuple[Path, Path]:
    return pyradiomics_case("breast1")


def test_nrrd_image_and_label_map(breast1: tuple[Path, Path]) -> None:
    image = load_image(breast1[0])
    assert image.GetSize() == (45, 120, 21)
    mask = load_mask(breast1[1], image)
    assert int(sitk.GetArrayViewFromImage(mask).sum()) == 143  # pyradiomics' VoxelNum
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetOrigin() == image.GetOrigin() and mask.GetSpacing() == image.GetSpacing()


def test_a_nifti_copy_of_a_nrrd_label_map_lies_on_the_nrrd_grid(
    breast1: tuple[Path, Path], tmp_path: Path
) -> None:
    """NIfTI is read by nibabel (RAS -> LPS) and NRRD by ITK: the same grid either way."""
    nifti = tmp_path / "label.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(breast1[1])), str(nifti))
    image = load_image(breast1[0])
    assert grid_offset_mm(image, load_image(nifti)) < GRID_TOLERANCE_MM
    assert int(sitk.GetArrayViewFromImage(load_mask(nifti, image)).sum()) == 143


def test_a_dicom_series_folder() -> None:
    image = load_image(_ct5n())
    assert image.GetSize() == (16, 16, 5)
    assert image.GetSpacing() == pytest.approx((0.488281, 0.488281, 2.5))


def _write(array: np.ndarray, like: sitk.Image, path: Path, shift: float = 0.0) -> Path:
    out = sitk.GetImageFromArray(array)
    out.SetSpacing(like.GetSpacing())
    out.SetDirection(like.GetDirection())
    origin = like.GetOrigin()
    out.SetOrigin((origin[0], origin[1], origin[2] + shift))
    sitk.WriteImage(out, str(path))
    return path


def test_a_mask_off_the_grid_is_refused_with_the_offset(tmp_path: Path) -> None:
    image = load_image(_ct5n())
    labels = np.zeros((5, 16, 16), np.uint8)
    labels[1:4, 4:10, 4:10] = 1
    shifted = _write(labels, image, tmp_path / "m.nrrd", shift=2.5)
    with pytest.raises(QuarantineError, match="not on the image's grid") as err:
        load_mask(shifted, image)
    assert "2.500 mm" in err.value.detail and "0.000, 0.000, 2.500" in err.value.detail
    tiny = _write(labels, image, tmp_path / "ok.nrrd", shift=0.004)  # within the tolerance
    assert int(sitk.GetArrayViewFromImage(load_mask(tiny, image)).sum()) == 3 * 6 * 6
    smaller = _write(labels[:4], image, tmp_path / "small.nrrd")
    with pytest.raises(QuarantineError, match="size 16x16x4 where the image is 16x16x5"):
        load_mask(smaller, image)


def test_labels_one_by_one(tmp_path: Path) -> None:
    image = load_image(_ct5n())
    labels = np.zeros((5, 16, 16), np.uint8)
    labels[1:3, 2:6, 2:6] = 1  # 32 voxels
    labels[2:4, 8:14, 8:11] = 4  # 36 voxels
    path = _write(labels, image, tmp_path / "labels.nii.gz")
    with pytest.raises(QuarantineError, match="several labels") as err:
        load_mask(path, image)
    assert "labels 1, 4" in err.value.detail
    assert int(sitk.GetArrayViewFromImage(load_mask(path, image, 4)).sum()) == 36
    assert int(sitk.GetArrayViewFromImage(load_mask(path, image, 1)).sum()) == 32
    with pytest.raises(QuarantineError, match="label not in the mask"):
        load_mask(path, image, 2)
    empty = _write(np.zeros((5, 16, 16), np.uint8), image, tmp_path / "empty.nrrd")
    with pytest.raises(QuarantineError, match="mask is empty"):
        load_mask(empty, image)
    fractional = _write(labels * 0.5, image, tmp_path / "soft.nrrd")
    with pytest.raises(QuarantineError, match="not a label map"):
        load_mask(fractional, image)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_image(tmp_path / "nothing.nrrd")
    other = tmp_path / "image.png"
    other.write_bytes(b"\x89PNG")
    with pytest.raises(QuarantineError, match="unsupported file type"):
        load_image(other)


def test_crop_keeps_every_mask_voxel_and_the_geometry(breast1: tuple[Path, Path]) -> None:
    image = load_image(breast1[0])
    mask = load_mask(breast1[1], image)
    small_image, small_mask = crop_to_mask(image, mask, pad=2)
    assert int(sitk.GetArrayViewFromImage(small_mask).sum()) == 143
    assert small_image.GetSize() == small_mask.GetSize()
    index = np.argwhere(sitk.GetArrayViewFromImage(small_mask))[0][::-1]
    point = small_mask.TransformIndexToPhysicalPoint([int(i) for i in index])
    assert mask.GetPixel(mask.TransformPhysicalPointToIndex(point)) == 1
    assert image.GetPixel(image.TransformPhysicalPointToIndex(point)) == small_image.GetPixel(
        [int(i) for i in index]
    )
