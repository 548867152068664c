"""The checks every ROI gets on the cropped grid: each warning, exactly when it applies."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from support.realdata import pyradiomics_case

from radflow.config import PreprocessParams
from radflow.errors import QuarantineError
from radflow.imaging.pipelines import preprocess_pipelines
from radflow.imaging.roi import lesion_mask
from radflow.imaging.roi_checks import roi_warnings


def _pair(values: float, box: tuple[slice, slice, slice]) -> tuple[sitk.Image, sitk.Image]:
    image = np.full((20, 20, 20), 30.0, dtype=np.float32)
    mask = np.zeros((20, 20, 20), dtype=np.uint8)
    mask[box] = 1
    image[box] = values
    return sitk.GetImageFromArray(image), sitk.GetImageFromArray(mask)


INSIDE = (slice(5, 10), slice(5, 10), slice(5, 10))


def test_a_soft_tissue_lesion_inside_the_crop_has_no_warning() -> None:
    assert roi_warnings(*_pair(40.0, INSIDE), "CT") == []


def test_an_empty_roi_is_quarantined() -> None:
    image, _ = _pair(40.0, INSIDE)
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    with pytest.raises(QuarantineError, match="ROI is empty after cropping"):
        roi_warnings(image, empty, "CT")


@pytest.mark.parametrize("face", [0, 19])
def test_touching_any_face_warns(face: int) -> None:
    for axis in range(3):
        box = [slice(5, 10)] * 3
        box[axis] = slice(face, face + 1)
        [warning] = roi_warnings(*_pair(40.0, tuple(box)), "CT")  # type: ignore[arg-type]
        assert warning.startswith("ROI touches the crop border")


def test_filling_the_crop_warns_with_its_share() -> None:
    box = (slice(1, 19), slice(1, 19), slice(1, 19))  # 18^3 / 20^3 = 73 %
    assert roi_warnings(*_pair(40.0, box), "CT") == [
        "ROI fills 73% of the crop: it is likely not a lesion"
    ]


def test_bone_warns_on_ct_only() -> None:
    assert roi_warnings(*_pair(700.0, INSIDE), "CT") == [
        "ROI is mostly bone (100% of it above 300 HU)"
    ]
    assert roi_warnings(*_pair(700.0, INSIDE), "MR") == []


def test_on_a_real_chest_ct_the_rule_is_flagged_and_the_label_is_not() -> None:
    # pyradiomics' lung1: the rule (largest blob above 80 HU) finds a large structure around
    # the spine, not the nodule its label marks (the review measured 50 mm between them).
    image_path, label_path = pyradiomics_case("lung1")
    image = sitk.ReadImage(str(image_path))
    label = sitk.Cast(sitk.ReadImage(str(label_path)) > 0, sitk.sitkUInt8)
    pipelines = preprocess_pipelines(PreprocessParams())
    cropped, roi = pipelines.geometry(image, lesion_mask(image))
    assert roi is not None
    assert roi_warnings(cropped, roi, "CT") == [
        "ROI touches the crop border: the lesion may extend beyond the crop"
    ]
    cropped, roi = pipelines.geometry(image, label)
    assert roi is not None
    assert roi_warnings(cropped, roi, "CT") == []
