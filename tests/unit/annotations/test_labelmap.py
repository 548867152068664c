"""Label maps (NRRD, NIfTI) on a series' grid: pyradiomics' real cases against its
published voxel counts, and label maps written off the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from support.realdata import CASES, pyradiomics_baseline, pyradiomics_case

from radflow.annotations import annotation_kind, segments_on_grid
from radflow.errors import QuarantineError


@pytest.mark.parametrize("case", CASES)
def test_pyradiomics_labels_give_its_published_voxel_counts(case: str) -> None:
    image_path, label_path = pyradiomics_case(case)
    assert annotation_kind(label_path) == "labelmap"
    segments = segments_on_grid(label_path, sitk.ReadImage(str(image_path)))
    by_number = {s.number: s for s in segments}
    published = pyradiomics_baseline("shape")[case]["diagnostics_Mask-original_VoxelNum"]
    assert by_number[1].voxels == int(published)  # pyradiomics' default label is 1
    assert by_number[1].label == "label 1" and by_number[1].code is None


def test_lung1_label_is_the_same_voxels_as_read(tmp_path: Path) -> None:
    image_path, label_path = pyradiomics_case("lung1")
    image = sitk.ReadImage(str(image_path))
    (segment,) = segments_on_grid(label_path, image)
    assert segment.voxels == 837
    assert np.array_equal(
        sitk.GetArrayFromImage(segment.mask),
        (sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))) == 1).astype(np.uint8),
    )
    assert segment.mask.GetSize() == image.GetSize()
    assert segment.mask.GetOrigin() == image.GetOrigin()


def test_a_label_map_stored_flipped_is_the_same_segment(tmp_path: Path) -> None:
    """NIfTI writers differ in axis order and sign; the voxels' positions are what count."""
    image_path, label_path = pyradiomics_case("lung1")
    label = sitk.ReadImage(str(label_path))
    flipped = sitk.Flip(label, [True, False, True])  # same physical voxels, stored reversed
    assert flipped.GetDirection() != label.GetDirection()
    sitk.WriteImage(flipped, str(tmp_path / "flipped.nii.gz"))
    assert annotation_kind(tmp_path / "flipped.nii.gz") == "labelmap"
    (segment,) = segments_on_grid(tmp_path / "flipped.nii.gz", sitk.ReadImage(str(image_path)))
    assert np.array_equal(
        sitk.GetArrayFromImage(segment.mask), (sitk.GetArrayFromImage(label) == 1).astype(np.uint8)
    )


def test_every_label_value_is_a_segment(tmp_path: Path) -> None:
    image_path, label_path = pyradiomics_case("lung1")
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label).astype(np.int16)
    array[0, 0, 0:5] = 7
    array[1, 0, 0:3] = 3
    relabelled = sitk.GetImageFromArray(array)
    relabelled.CopyInformation(label)
    sitk.WriteImage(relabelled, str(tmp_path / "three.nrrd"))
    segments = segments_on_grid(tmp_path / "three.nrrd", sitk.ReadImage(str(image_path)))
    assert [(s.number, s.label, s.voxels) for s in segments] == [
        (1, "label 1", 837),
        (3, "label 3", 3),
        (7, "label 7", 5),
    ]


def test_a_label_map_shifted_2_mm_is_quarantined_with_the_offset(tmp_path: Path) -> None:
    image_path, label_path = pyradiomics_case("lung1")
    label = sitk.ReadImage(str(label_path))
    x, y, z = label.GetOrigin()
    label.SetOrigin((x + 2.0, y, z))
    sitk.WriteImage(label, str(tmp_path / "shifted.nrrd"))
    with pytest.raises(QuarantineError) as caught:
        segments_on_grid(tmp_path / "shifted.nrrd", sitk.ReadImage(str(image_path)))
    assert caught.value.reason == "label map is off the series' grid"
    assert caught.value.detail == "by 2.00 mm (tolerance 0.5 mm)"


def test_a_label_map_of_another_size_is_quarantined(tmp_path: Path) -> None:
    image_path, label_path = pyradiomics_case("lung1")
    label = sitk.ReadImage(str(label_path))
    sitk.WriteImage(label[:, :, 1:], str(tmp_path / "short.nrrd"))
    image = sitk.ReadImage(str(image_path))
    with pytest.raises(QuarantineError) as caught:
        segments_on_grid(tmp_path / "short.nrrd", image)
    nx, ny, nz = image.GetSize()
    assert caught.value.reason == "label map is not on the series' grid"
    assert caught.value.detail == (
        f"size {nx} x {ny} x {nz - 1} where the series has {nx} x {ny} x {nz}"
    )
