"""The ROI rule coarse to fine: the same mask, voxel for voxel, as the rule on the whole image,
and the cases where it declines and runs on the whole image instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk

from radflow.errors import QuarantineError
from radflow.imaging.read import read_series
from radflow.imaging.roi import (
    SMALL_IMAGE_VOXELS,
    coarse_to_fine_mask,
    lesion_mask,
    whole_image_mask,
)
from radflow.synth import SynthSpec, SynthStudy, synthesize

# 256 x 256 x 128 at 0.7 x 0.7 x 1.25 mm: a CT's in-plane and slice spacing, big enough that
# the candidate's box (lesion plus 24 sigma each side) is a small part of the image.
LARGE = SynthSpec(
    studies=4, rows=256, columns=256, slices=128, pixel_spacing=0.7, slice_thickness=1.25
)


def _primary(study: SynthStudy) -> sitk.Image:
    return read_series(sorted(f for f in study.files if f.parent.name == "S1"))


def _array(image: sitk.Image) -> npt.NDArray[np.uint8]:
    array: npt.NDArray[np.uint8] = sitk.GetArrayFromImage(image)
    return array


def _image(hu: npt.NDArray[np.float32]) -> sitk.Image:
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.7, 0.7, 1.25))
    image.SetOrigin((-90.0, 12.5, -80.0))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0))  # not the identity
    return image


def _body(rng: np.random.Generator, shape: tuple[int, int, int]) -> npt.NDArray[np.float32]:
    """A noisy soft-tissue cylinder in air, (z, y, x)."""
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    inside = (x - shape[2] / 2) ** 2 + (y - shape[1] / 2) ** 2 <= (0.45 * shape[2]) ** 2
    hu = np.where(inside, 35.0, -1000.0) + rng.normal(0, 12, shape)
    return hu.astype(np.float32)


def _mm2(
    shape: tuple[int, int, int], centre: tuple[float, float, float]
) -> npt.NDArray[np.float64]:
    """Squared distance in mm from `centre` (z, y, x voxels) of every voxel."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cz, cy, cx = centre
    mm2: npt.NDArray[np.float64] = (
        ((x - cx) * 0.7) ** 2 + ((y - cy) * 0.7) ** 2 + ((z - cz) * 1.25) ** 2
    )
    return mm2


@pytest.fixture(scope="module")
def large_studies(tmp_path_factory: pytest.TempPathFactory) -> list[SynthStudy]:
    root = tmp_path_factory.mktemp("large")
    return synthesize(root / "inbox", root / "labels.csv", LARGE)


def test_synthesized_ct_studies_get_the_whole_image_mask_from_the_candidate_box(
    large_studies: list[SynthStudy],
) -> None:
    assert {s.label for s in large_studies} == {0, 1}  # smooth and lobulated lesions
    for study in large_studies:
        image = _primary(study)
        assert image.GetNumberOfPixels() >= SMALL_IMAGE_VOXELS
        whole = _array(whole_image_mask(image))
        fast = coarse_to_fine_mask(image, 80.0, 1.0)
        assert fast is not None  # the coarse-to-fine path really ran
        assert fast.GetPixelID() == sitk.sitkUInt8
        assert (fast.GetOrigin(), fast.GetSpacing()) == (image.GetOrigin(), image.GetSpacing())
        np.testing.assert_array_equal(_array(fast), whole)
        np.testing.assert_array_equal(_array(lesion_mask(image)), whole)
        assert study.truth is not None
        assert 0.6 * study.truth.voxels < whole.sum() < 1.4 * study.truth.voxels


def test_the_demos_studies_are_small_and_keep_the_whole_image_rule(tmp_path: Path) -> None:
    studies = synthesize(tmp_path / "inbox", tmp_path / "labels.csv", SynthSpec(studies=6))
    for study in studies:
        image = _primary(study)
        assert image.GetNumberOfPixels() < SMALL_IMAGE_VOXELS
        np.testing.assert_array_equal(_array(lesion_mask(image)), _array(whole_image_mask(image)))


def test_a_hollow_lesion_on_the_image_edge_is_filled_as_on_the_whole_image() -> None:
    shape = (128, 256, 256)
    rng = np.random.default_rng(3)
    hu = _body(rng, shape)
    r2 = _mm2(shape, (10.0, 128.0, 140.0))  # 10 slices from the first one: the box
    hu[(r2 <= 9.0**2) & (r2 >= 5.0**2)] += 150.0  # reaches the image's face
    hu[r2 <= 2.0**2] = 1000.0  # and a bright speck in the middle of the dark core
    image = _image(hu)
    fast = coarse_to_fine_mask(image, 80.0, 1.0)
    assert fast is not None
    found = _array(fast)
    np.testing.assert_array_equal(found, _array(whole_image_mask(image)))
    assert found[r2 <= 4.0**2].all()  # the core is a hole, filled


def test_two_blobs_of_similar_size_decline_to_the_whole_image() -> None:
    shape = (128, 256, 256)
    hu = _body(np.random.default_rng(4), shape)
    hu[_mm2(shape, (40.0, 100.0, 90.0)) <= 8.0**2] += 120.0
    larger = _mm2(shape, (90.0, 150.0, 170.0)) <= 8.6**2
    hu[larger] += 120.0
    image = _image(hu)
    assert coarse_to_fine_mask(image, 80.0, 1.0) is None
    found = _array(lesion_mask(image)).astype(bool)
    np.testing.assert_array_equal(found, _array(whole_image_mask(image)).astype(bool))
    assert found[larger].mean() > 0.9  # the whole-image rule picked the larger one


def test_a_large_image_with_nothing_bright_is_quarantined() -> None:
    image = _image(_body(np.random.default_rng(5), (128, 256, 256)))
    assert coarse_to_fine_mask(image, 80.0, 1.0) is None
    with pytest.raises(QuarantineError) as err:
        lesion_mask(image)
    assert err.value.reason == "no lesion found"
