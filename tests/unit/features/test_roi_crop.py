"""Features are extracted on the ROI's bounding box: the same numbers as on the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from support.nodule import nodule_in_ct

from radflow.features.discretise import crop_to_roi, roi_box
from radflow.features.radiomics import extract, first_order, shape
from radflow.features.texture import texture_features
from radflow.features.zones import zone_features


def test_features_of_the_box_are_those_of_the_whole_ct_to_the_bit() -> None:
    """Exact equality, not a tolerance: the crop hands every family the ROI's voxels in the
    same order (C order within the box is C order within the volume), so each feature is the
    same sequence of floating-point operations on the same numbers."""
    image, mask = nodule_in_ct()
    whole = (
        first_order(image, mask)
        | shape(mask)
        | texture_features(image, mask, 25.0)
        | zone_features(image, mask, 25.0)
    )
    cropped = extract(image, mask)
    assert list(cropped) == sorted(whole)
    assert cropped == whole
    small_image, small_mask = crop_to_roi(image, mask)
    assert small_image.GetSize() == small_mask.GetSize() == (29, 30, 18)
    assert small_mask.GetOrigin() == mask.TransformIndexToPhysicalPoint((288, 235, 142))
    assert cropped["original_shape_VoxelVolume"] == pytest.approx(
        int(sitk.GetArrayViewFromImage(mask).sum()) * 0.7 * 0.7 * 1.25
    )


@pytest.mark.parametrize("seed", range(5))
def test_roi_box_is_the_extent_of_the_non_zero_voxels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((9, 11, 13), np.uint8)
    points = rng.integers(0, (9, 11, 13), (4, 3))
    points[0] = (0, 10, 12) if seed % 2 else points[0]  # touching the array's ends
    mask[tuple(points.T)] = rng.integers(1, 5, 4)
    expected = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    assert roi_box(mask) == expected
    plane = mask[points[0][0]]  # a 2-D mask holding point 0
    assert roi_box(plane) == tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(plane))


def test_an_empty_mask_has_no_box() -> None:
    with pytest.raises(ValueError, match="empty"):
        roi_box(np.zeros((3, 4, 5), np.uint8))
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="empty"):
        extract(image, sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8)))
