"""Radiomic features against hand computations, and the demo ROI rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from radflow.errors import QuarantineError
from radflow.features.radiomics import extract, first_order, shape
from radflow.imaging.roi import lesion_mask


def _image(array: np.ndarray, spacing: float = 1.0) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((spacing,) * 3)
    return image


def _sphere(radius: float, size: int) -> np.ndarray:
    z, y, x = np.mgrid[:size, :size, :size] - (size - 1) / 2
    ball: np.ndarray = (x**2 + y**2 + z**2 <= radius**2).astype(np.uint8)
    return ball


@pytest.fixture
def tiny() -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    values = np.arange(27, dtype=np.float64).reshape(3, 3, 3) * 10 - 40  # -40 .. 220
    mask = np.zeros((3, 3, 3), np.uint8)
    mask[1:, :, 1:] = 1  # 12 voxels
    mask[0, 0, 0] = 7  # any non-zero value counts
    x = values[mask != 0]
    return _image(values), _image(mask), x


def test_first_order_matches_numpy(tiny: tuple[sitk.Image, sitk.Image, np.ndarray]) -> None:
    image, mask, x = tiny
    f = first_order(image, mask)
    d = x - x.mean()
    expected = {
        "Mean": x.mean(),
        "Variance": np.mean(d**2),
        "Skewness": np.mean(d**3) / np.mean(d**2) ** 1.5,
        "Kurtosis": np.mean(d**4) / np.mean(d**2) ** 2,
        "Energy": np.sum(x**2),
        "Minimum": x.min(),
        "Maximum": x.max(),
        "Range": x.max() - x.min(),
        "10Percentile": np.percentile(x, 10),
        "90Percentile": np.percentile(x, 90),
        "Median": np.median(x),
        "InterquartileRange": np.percentile(x, 75) - np.percentile(x, 25),
        "MeanAbsoluteDeviation": np.mean(np.abs(d)),
        "RootMeanSquared": np.sqrt(np.mean(x**2)),
    }
    assert len(x) == 13
    for name, value in expected.items():
        assert f[f"original_firstorder_{name}"] == pytest.approx(value), name
    assert all(type(v) is float for v in f.values())


def test_kurtosis_is_not_excess() -> None:
    x = np.array([0.0, 0.0, 0.0, 10.0])  # mean 2.5, m2 = 18.75, m4 = 820.3125
    d = x - 2.5
    image = _image(x.reshape(1, 2, 2))
    mask = _image(np.ones((1, 2, 2), np.uint8))
    kurtosis = first_order(image, mask)["original_firstorder_Kurtosis"]
    assert kurtosis == pytest.approx(np.mean(d**4) / np.mean(d**2) ** 2)
    assert kurtosis == pytest.approx(7 / 3)  # m4 / m2²; excess kurtosis would be -2/3


def test_entropy_and_uniformity_on_known_histogram() -> None:
    # bin width 25, bins anchored at multiples of 25: [0,25) holds 2, [25,50) 1, [100,125) 1
    x = np.array([0.0, 24.9, 25.0, 110.0])
    image = _image(x.reshape(1, 2, 2))
    mask = _image(np.ones((1, 2, 2), np.uint8))
    f = first_order(image, mask, bin_width=25.0)
    p = np.array([0.5, 0.25, 0.25])
    assert f["original_firstorder_Entropy"] == pytest.approx(1.5)
    assert f["original_firstorder_Entropy"] == pytest.approx(-np.sum(p * np.log2(p)))
    assert f["original_firstorder_Uniformity"] == pytest.approx(0.375)


def test_bins_follow_pyradiomics_edges_with_negative_values() -> None:
    # min -30 -> bins start at -50: [-50,-25) holds -30, [-25,0) holds -20 and -1, [0,25) holds 0
    x = np.array([-30.0, -20.0, -1.0, 0.0])
    f = first_order(_image(x.reshape(1, 2, 2)), _image(np.ones((1, 2, 2), np.uint8)))
    assert f["original_firstorder_Uniformity"] == pytest.approx(0.25**2 * 2 + 0.5**2)


def test_sphere_shape() -> None:
    """`shape` reads the mask's grid; the mesh itself is tested in test_shape.py."""
    radius = 10
    s = shape(_image(_sphere(radius, 2 * radius + 5)))
    assert s["original_shape_VoxelVolume"] == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.05)
    assert s["original_shape_MeshVolume"] == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.05)
    assert 0.85 <= s["original_shape_Sphericity"] <= 1.0
    assert s["original_shape_Elongation"] == pytest.approx(1.0, abs=0.02)
    assert s["original_shape_Flatness"] == pytest.approx(1.0, abs=0.02)
    assert s["original_shape_SurfaceArea"] == pytest.approx(4 * math.pi * radius**2, rel=0.1)
    # pyradiomics: 4·sqrt(largest eigenvalue); for a ball that eigenvalue is r²/5
    assert s["original_shape_MajorAxisLength"] == pytest.approx(4 * radius / math.sqrt(5), rel=0.05)
    assert all(type(v) is float for v in s.values())


def test_shape_uses_spacing_and_axis_ratios() -> None:
    box = np.zeros((6, 12, 24), np.uint8)
    box[1:5, 2:10, 2:22] = 1  # 4 × 8 × 20 voxels
    image = _image(box)
    image.SetSpacing((1.0, 2.0, 3.0))  # x, y, z as SimpleITK orders them
    s = shape(image)
    assert s["original_shape_VoxelVolume"] == pytest.approx(4 * 8 * 20 * 6.0)
    # uniform box of side n voxels: variance (n² - 1) / 12 · spacing²
    assert s["original_shape_MajorAxisLength"] == pytest.approx(4 * math.sqrt(399 / 12))
    assert s["original_shape_MinorAxisLength"] == pytest.approx(4 * math.sqrt(63 / 12 * 4))
    assert s["original_shape_LeastAxisLength"] == pytest.approx(4 * math.sqrt(15 / 12 * 9))


def test_a_flat_region_has_zero_flatness() -> None:
    # A disc one slice thick whose least moment SimpleITK rounded to -1.1e-16 (found by the
    # load test): it used to fail on the square root.
    disc = np.zeros((5, 16, 16), np.uint8)
    yy, xx = np.mgrid[:16, :16]
    disc[2][(yy - 6) ** 2 + (xx - 7) ** 2 <= 4] = 1
    image = sitk.GetImageFromArray(disc)
    image.SetSpacing((0.9, 0.9, 1.5))
    s = shape(image)
    assert s["original_shape_Flatness"] == 0.0
    assert s["original_shape_LeastAxisLength"] == 0.0
    assert s["original_shape_Elongation"] == pytest.approx(1.0, abs=0.05)


def test_first_order_adds_total_energy_robust_deviation_and_the_voxel_shift() -> None:
    x = np.arange(1.0, 21.0)  # 1..20: 10th percentile 2.9, 90th 18.1
    image = _image(x.reshape(1, 4, 5), spacing=2.0)
    mask = _image(np.ones((1, 4, 5), np.uint8), spacing=2.0)
    f = first_order(image, mask)
    assert f["original_firstorder_TotalEnergy"] == pytest.approx(8.0 * np.sum(x**2))
    robust = x[(x >= 2.9) & (x <= 18.1)]  # 3..18
    assert f["original_firstorder_RobustMeanAbsoluteDeviation"] == pytest.approx(
        np.mean(np.abs(robust - robust.mean()))
    )
    shifted = first_order(image, mask, voxel_array_shift=100.0)
    assert shifted["original_firstorder_Energy"] == pytest.approx(np.sum((x + 100) ** 2))
    assert shifted["original_firstorder_RootMeanSquared"] == pytest.approx(
        math.sqrt(np.mean((x + 100) ** 2))
    )
    assert shifted["original_firstorder_Mean"] == f["original_firstorder_Mean"]


def test_extract_is_sorted_union() -> None:
    image = _image(_sphere(4, 12).astype(np.float64) * 100)
    mask = _image(_sphere(4, 12))
    features = extract(image, mask)
    assert list(features) == sorted(features)
    # pyradiomics' defaults: first order 18, shape 14, GLCM 24, GLRLM 16, GLSZM 16, GLDM 14,
    # NGTDM 5
    assert len(features) == 18 + 14 + 24 + 16 + 16 + 14 + 5
    families = {name.split("_")[1] for name in features}
    assert families == {"firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    assert features["original_firstorder_Mean"] == pytest.approx(100.0)


@pytest.mark.parametrize("change", ["size", "spacing", "origin"])
def test_mismatched_geometry_raises(change: str) -> None:
    image = _image(np.zeros((4, 4, 4)))
    mask = _image(np.ones((4, 4, 4), np.uint8))
    if change == "size":
        mask = _image(np.ones((4, 4, 5), np.uint8))
    elif change == "spacing":
        mask.SetSpacing((1.0, 1.0, 2.0))
    else:
        mask.SetOrigin((0.0, 0.0, 5.0))
    with pytest.raises(ValueError, match=change):
        first_order(image, mask)


def test_empty_mask_raises() -> None:
    image = _image(np.zeros((4, 4, 4)))
    empty = _image(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        first_order(image, empty)
    with pytest.raises(ValueError, match="empty"):
        shape(empty)


def test_lesion_mask_finds_bright_sphere_in_noisy_body() -> None:
    rng = np.random.default_rng(0)
    size = 48
    z, y, x = np.mgrid[:size, :size, :size] - (size - 1) / 2
    body = np.where(x**2 + y**2 <= 20**2, 30.0, -1000.0)  # soft-tissue cylinder in air
    r2 = (x - 5) ** 2 + (y + 4) ** 2 + z**2
    lesion = r2 <= 6**2
    lesion_shell = lesion & (r2 >= 3**2)  # a bright rim around a dark, necrotic-like core
    hu = body + np.where(lesion_shell, 170.0, 0.0) + rng.normal(0, 15, body.shape)
    small = (x + 12) ** 2 + y**2 + (z - 10) ** 2 <= 2**2  # a smaller bright blob to ignore
    hu[small] += 170.0
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing((0.8, 0.8, 1.5))
    image.SetOrigin((-20.0, 5.0, 100.0))
    mask = lesion_mask(image)
    found = sitk.GetArrayFromImage(mask).astype(bool)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSpacing() == image.GetSpacing() and mask.GetOrigin() == image.GetOrigin()
    assert not found[small].any()
    assert found[r2 <= 2**2].all()  # the dark core is filled in as a hole
    assert (found & lesion).sum() / (found | lesion).sum() > 0.7


def test_lesion_mask_quarantines_blank_image() -> None:
    image = sitk.GetImageFromArray(np.full((16, 16, 16), 20.0, np.float32))
    with pytest.raises(QuarantineError) as err:
        lesion_mask(image)
    assert err.value.reason == "no lesion found"


def test_a_region_too_small_for_texture_is_quarantined_not_a_nan_row() -> None:
    """One voxel has no neighbour pair: IBSI's texture features are NaN there, which would
    break training and scoring (found by the load test on 24x24x8 studies)."""
    from radflow.stages.features import require_finite

    values = np.full((5, 5, 5), 100.0)
    one = np.zeros((5, 5, 5), np.uint8)
    one[2, 2, 2] = 1
    features = extract(_image(values), _image(one))
    assert any(math.isnan(v) for v in features.values())
    with pytest.raises(QuarantineError, match="features not finite") as err:
        require_finite(features, _image(one))
    assert "the ROI has 1 voxels" in err.value.detail
    ball = _image(_sphere(4, 12))
    whole = extract(_image(_sphere(4, 12).astype(np.float64) * 100), ball)
    assert require_finite(whole, ball) is whole
