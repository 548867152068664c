"""Preprocessing invariants: exact output geometry, the NIfTI affine nibabel reads, labels kept,
intensity ranges and statistics, bias-field correction, body-centred cropping, and the fused
resample-and-crop agreeing with the steps run one by one."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk

from radflow.imaging.preprocess import (
    N4,
    CropPad,
    Grid,
    Percentile,
    Pipeline,
    Reorient,
    Resample,
    Window,
    ZScore,
    body_centre,
)

OBLIQUE = tuple(
    float(v) for v in sitk.VersorRigid3DTransform((0.1, -0.2, 0.15, 0.96), (0, 0, 0)).GetMatrix()
)


def _image(
    size: tuple[int, int, int],
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.0),
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    origin: tuple[float, float, float] = (-20.0, 13.5, 7.25),
    values: npt.NDArray[np.float32] | None = None,
    seed: int = 0,
) -> sitk.Image:
    """Random HU in [-900, 900] (or `values`, a z, y, x array) on the given grid."""
    if values is None:
        values = np.random.default_rng(seed).uniform(-900, 900, size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _ball(
    size: tuple[int, int, int], centre: tuple[float, float, float], radius: float
) -> npt.NDArray[np.bool_]:
    """A (z, y, x) boolean ball in voxel units; centre is (i, j, k)."""
    k, j, i = np.indices(size[::-1], dtype=np.float64)
    inside: npt.NDArray[np.bool_] = (
        (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2
    ) <= radius**2
    return inside


def _sphere_mask(
    image: sitk.Image, centre_index: tuple[float, float, float], radius_mm: float
) -> sitk.Image:
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    offsets = [
        (a - c) * s for a, c, s in zip((i, j, k), centre_index, image.GetSpacing(), strict=True)
    ]
    inside = sum(o**2 for o in offsets) <= radius_mm**2
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def _on(image: sitk.Image, values: npt.NDArray[np.generic]) -> sitk.Image:
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(image)
    return out


# --------------------------------------------------------------------------- geometry


def test_resample_gives_exact_shape_spacing_and_frame() -> None:
    image = _image((45, 38, 17), (0.77, 0.77, 2.5), direction=OBLIQUE)
    out, mask = Resample((1.5, 1.5, 1.5))(image, None)
    assert mask is None
    assert out.GetSize() == (
        23,
        20,
        28,
    )  # round(45*0.77/1.5), round(38*0.77/1.5), round(17*2.5/1.5)
    assert out.GetSpacing() == (1.5, 1.5, 1.5)
    assert out.GetOrigin() == image.GetOrigin()
    assert out.GetDirection() == image.GetDirection()
    assert out.GetPixelID() == sitk.sitkFloat32
    # Already on the grid: returned as is, no copy.
    assert Resample((0.77, 0.77, 2.5))(image, None)[0] is image


def test_reorient_leaves_an_lps_image_alone() -> None:
    image = _image((5, 6, 7))
    assert Reorient()(image, None)[0] is image


def test_nifti_written_by_simpleitk_has_the_ras_affine_of_the_geometry(tmp_path: Path) -> None:
    """ITK's frame is LPS, NIfTI's RAS: the written affine is diag(-1, -1, 1) times ITK's."""
    image = _image((30, 28, 12), (0.9, 0.9, 2.0), direction=OBLIQUE)
    steps = (Reorient(), Resample((1.2, 1.2, 1.2)), CropPad((24, 20, 16)), Window(40, 400))
    out, _ = Pipeline(steps)(image, None)
    path = tmp_path / "input.nii.gz"
    sitk.WriteImage(out, str(path), useCompression=True)

    direction = np.array(out.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(out.GetSpacing())
    lps[:3, 3] = out.GetOrigin()
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    nifti = nibabel.load(path)
    np.testing.assert_allclose(nifti.affine, expected, atol=1e-5)
    assert nifti.shape == (24, 20, 16)  # NIfTI's (i, j, k) order is ITK's size order
    np.testing.assert_allclose(nifti.header.get_zooms(), (1.2, 1.2, 1.2), atol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(nifti.dataobj).transpose(2, 1, 0), sitk.GetArrayFromImage(out)
    )


@pytest.mark.parametrize("interpolator", ["nearest", "label_gaussian"])
def test_resample_keeps_mask_labels(interpolator: str) -> None:
    size = (40, 36, 14)
    image = _image(size, (0.8, 0.8, 2.5))
    labels = np.zeros(size[::-1], dtype=np.uint8)
    labels[_ball(size, (12.0, 18.0, 7.0), 8.0)] = 1
    labels[_ball(size, (28.0, 18.0, 7.0), 7.0)] = 2
    mask = _on(image, labels)
    step = Resample((1.5, 1.5, 1.5), mask_interpolator=interpolator)  # type: ignore[arg-type]
    out, out_mask = step(image, mask)
    assert out_mask is not None
    assert out_mask.GetPixelID() == sitk.sitkUInt8
    assert Grid.of(out_mask) == Grid.of(out)
    m = sitk.GetArrayFromImage(out_mask)
    assert set(np.unique(m).tolist()) == {0, 1, 2}  # no blended in-between labels
    # Each label keeps its volume (to a partial-volume margin) after the resample.
    for label in (1, 2):
        before = (labels == label).sum() * 0.8 * 0.8 * 2.5
        after = (m == label).sum() * 1.5**3
        assert after == pytest.approx(before, rel=0.25)


# --------------------------------------------------------------------------- intensities


def test_window_output_is_within_unit_range_also_for_integer_input() -> None:
    image = _image((20, 20, 8))
    out, _ = Window(40, 400)(image, None)
    values = sitk.GetArrayFromImage(out)
    assert out.GetPixelID() == sitk.sitkFloat32
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert ((values > 0) & (values < 1)).any()
    as_int = sitk.Cast(image, sitk.sitkInt16)
    out_int, _ = Window(40, 400)(as_int, None)
    values_int = sitk.GetArrayFromImage(out_int)
    assert out_int.GetPixelID() == sitk.sitkFloat32
    assert len(np.unique(values_int)) > 100  # not just 0 and 1
    np.testing.assert_allclose(values_int, values, atol=1 / 400)


def _mr(size: tuple[int, int, int] = (48, 48, 32), seed: int = 0) -> sitk.Image:
    """An MR-like volume: a dark background with noise and a bright ellipsoidal head."""
    rng = np.random.default_rng(seed)
    values = rng.normal(10.0, 3.0, size[::-1]).astype(np.float32)
    head = _ball(size, (23.5, 23.5, 15.5), 14.0)
    values[head] = rng.normal(600.0, 60.0, int(head.sum())).astype(np.float32)
    return _image(size, (1.0, 1.0, 1.5), values=values)


def test_zscore_of_the_body_has_mean_0_and_std_1() -> None:
    image = _mr()
    out, _ = ZScore()(image, None)
    z = sitk.GetArrayFromImage(out)
    body = sitk.GetArrayFromImage(image) > 300
    assert z[body].mean() == pytest.approx(0.0, abs=0.02)
    assert z[body].std() == pytest.approx(1.0, abs=0.02)
    assert z[~body].mean() < -5  # background far below the tissue

    # Within the mask: the statistics of the masked voxels alone.
    mask_values = np.zeros(body.shape, dtype=np.uint8)
    mask_values[:, :24, :] = body[:, :24, :]
    out_mask, _ = ZScore(within="mask")(image, _on(image, mask_values))
    zm = sitk.GetArrayFromImage(out_mask)[mask_values > 0]
    assert zm.mean() == pytest.approx(0.0, abs=1e-3) and zm.std() == pytest.approx(1.0, abs=1e-2)
    # An empty mask falls back to the body.
    empty = _on(image, np.zeros(body.shape, dtype=np.uint8))
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(ZScore(within="mask")(image, empty)[0]), z, atol=1e-5
    )


def test_percentile_output_is_within_unit_range() -> None:
    image = _mr()
    out, _ = Percentile(1.0, 99.0)(image, None)
    p = sitk.GetArrayFromImage(out)
    assert p.min() >= 0.0 and p.max() <= 1.0
    body = sitk.GetArrayFromImage(image) > 300
    assert (p[body] == 1.0).mean() == pytest.approx(0.01, abs=0.005)  # the top 1% clipped
    assert (p[body] == 0.0).mean() == pytest.approx(0.01, abs=0.005)
    assert (p[~body] == 0.0).all()  # background is below the body's 1st percentile
    image_wide, _ = Percentile(0.0, 100.0, within="image")(image, None)
    w = sitk.GetArrayFromImage(image_wide)
    assert w.min() == 0.0 and w.max() == 1.0


def test_n4_reduces_a_multiplicative_bias_field() -> None:
    size = (48, 48, 32)
    image = _mr(size)
    k, _, i = np.indices(size[::-1], dtype=np.float32)
    bias = np.exp(0.8 * (i - 24) / 24 + 0.4 * (k - 16) / 16, dtype=np.float32)  # smooth shading
    biased = _on(image, sitk.GetArrayFromImage(image) * bias)
    inside = _ball(size, (23.5, 23.5, 15.5), 11.0)  # uniform tissue, away from the edge

    def cov(img: sitk.Image) -> float:
        values = sitk.GetArrayFromImage(img)[inside]
        return float(values.std() / values.mean())

    corrected, _ = N4(shrink=2)(biased, None)
    assert corrected.GetSize() == biased.GetSize()
    assert cov(biased) > 0.2  # the bias dominates the 10 % noise
    assert cov(corrected) < 0.6 * cov(biased), (cov(biased), cov(corrected))


# --------------------------------------------------------------------------- cropping


def _off_centre_body(size: tuple[int, int, int]) -> tuple[sitk.Image, npt.NDArray[np.bool_]]:
    """Air (-1000 HU) with a soft-tissue ball well away from the image centre."""
    values = np.full(size[::-1], -1000.0, dtype=np.float32)
    body = _ball(size, (12.0, 30.0, 9.0), 8.0)
    values[body] = 40.0
    values += np.random.default_rng(3).normal(0.0, 5.0, size[::-1]).astype(np.float32)
    return _image(size, (1.0, 0.8, 2.0), values=values), body


@pytest.mark.parametrize("empty", ["none", "zeros"])
def test_croppad_with_an_empty_mask_centres_on_the_body(empty: str) -> None:
    size = (50, 44, 20)
    image, body = _off_centre_body(size)
    mask = None if empty == "none" else _on(image, np.zeros(body.shape, dtype=np.uint8))
    shape = (16, 16, 8)
    out, out_mask = CropPad(shape)(image, mask)
    assert out.GetSize() == shape
    assert (out_mask is None) == (mask is None)

    k, j, i = (c.mean() for c in np.nonzero(body))
    truth = np.array(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))
    centre = np.array(out.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in shape]))
    assert (np.abs(centre - truth) <= np.array(image.GetSpacing())).all()
    middle = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size]))
    assert np.linalg.norm(centre - middle) > 10  # not the image centre
    np.testing.assert_allclose(body_centre(image), truth, atol=1.5)
    assert (sitk.GetArrayFromImage(out) > -500).mean() > 0.5  # the crop holds the body


def test_croppad_of_a_blank_image_uses_the_image_centre() -> None:
    image = _image((21, 20, 9), values=np.full((9, 20, 21), -1000.0, dtype=np.float32))
    out, _ = CropPad((11, 12, 5))(image, None)
    middle = image.TransformContinuousIndexToPhysicalPoint([10, 9.5, 4])
    centre = out.TransformContinuousIndexToPhysicalPoint([5, 5.5, 2])
    assert np.allclose(middle, centre, atol=1.0)
    assert (sitk.GetArrayFromImage(out) == -1000.0).all()


def _assert_same(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize() and a.GetPixelID() == b.GetPixelID()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-9)
    assert a.GetSpacing() == b.GetSpacing() and a.GetDirection() == b.GetDirection()
    np.testing.assert_allclose(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b), atol=1e-5)


@pytest.mark.parametrize("seed", range(12))
def test_fused_resample_and_crop_equals_the_steps_in_turn(seed: int) -> None:
    """Random ROIs (some at the edge, so the crop pads) on an oblique anisotropic grid."""
    rng = np.random.default_rng(seed)
    size = (60, 48, 18)
    image = _image(size, (0.7, 0.7, 2.5), direction=OBLIQUE, seed=5)
    centre = tuple(float(v) for v in rng.uniform((0, 0, 0), size))
    labels = np.zeros(size[::-1], dtype=np.uint8)
    labels[_ball(size, centre, rng.uniform(2.5, 6))] = 1  # type: ignore[arg-type]
    labels[_ball(size, (centre[0] + 2, centre[1], centre[2]), 1.5)] = 2  # type: ignore[arg-type]
    mask = _on(image, labels)
    shape = (24, 20, 10) if seed % 2 else (40, 36, 24)
    pipeline = Pipeline((Reorient(), Resample((1.5, 1.5, 1.5)), CropPad(shape), Window(40, 400)))

    fused, fused_mask = pipeline(image, mask)
    stepwise, stepwise_mask = pipeline.step_by_step(image, mask)
    assert fused_mask is not None and stepwise_mask is not None
    assert fused.GetSize() == shape
    _assert_same(fused, stepwise)
    _assert_same(fused_mask, stepwise_mask)
    assert Grid.of(fused) == Grid.of(fused_mask)


def test_fused_body_centred_crop_is_within_a_voxel_of_the_steps_in_turn() -> None:
    """Without an ROI the body centre is measured on the input grid: at most one voxel off."""
    image, _ = _off_centre_body((50, 44, 20))
    pipeline = Pipeline((Resample((1.5, 1.5, 1.5)), CropPad((16, 16, 12))))
    fused, _ = pipeline(image, None)
    stepwise, _ = pipeline.step_by_step(image, None)
    shift = Grid.of(stepwise).index(fused.GetOrigin())
    assert np.abs(shift).max() <= 1 + 1e-9
    np.testing.assert_allclose(shift, np.rint(shift), atol=1e-6)  # the same grid, shifted


def test_describe_lists_the_new_steps_parameters() -> None:
    pipeline = Pipeline((N4(), ZScore(), Percentile(1.0, 99.0, within="image")))
    assert pipeline.describe() == [
        {"step": "N4", "shrink": 4, "iterations": (50, 50, 50, 50), "body_threshold": None},
        {"step": "ZScore", "within": "body", "body_threshold": None},
        {
            "step": "Percentile",
            "low": 1.0,
            "high": 99.0,
            "within": "image",
            "body_threshold": None,
        },
    ]
    assert (
        Pipeline((CropPad((8, 8, 8), body_threshold=-500.0),)).describe()
        != Pipeline((CropPad((8, 8, 8)),)).describe()
    )


# ---------------------------------------------------------------------- the steps one by one


def test_resample_to_isotropic_spacing() -> None:
    size, spacing = (50, 47, 21), (0.9, 0.9, 2.0)
    image = _image(size, spacing)
    mask = _sphere_mask(image, (25, 23, 10), 8.0)
    out, out_mask = Resample((1.5, 1.5, 1.5))(image, mask)

    expected = tuple(round(n * s / 1.5) for n, s in zip(size, spacing, strict=True))
    assert expected == (30, 28, 28)
    assert out.GetSize() == expected
    assert out.GetSpacing() == (1.5, 1.5, 1.5)
    assert out.GetOrigin() == image.GetOrigin()
    assert out.GetDirection() == image.GetDirection()
    assert out.GetPixelID() == image.GetPixelID()
    assert out_mask.GetSize() == expected
    assert out_mask.GetOrigin() == image.GetOrigin()

    m = sitk.GetArrayFromImage(out_mask)
    assert set(np.unique(m).tolist()) == {0, 1}  # nearest neighbour: still binary
    sphere_voxels = 4 / 3 * np.pi * 8.0**3 / 1.5**3
    assert m.sum() == pytest.approx(sphere_voxels, rel=0.2)
    # The first voxel sits on the same physical point, so it keeps its value exactly.
    assert out.GetPixel(0, 0, 0) == pytest.approx(image.GetPixel(0, 0, 0))


def test_croppad_centres_the_mask_and_pads_with_air() -> None:
    image = _image((40, 30, 20), (0.8, 0.8, 1.5), seed=1)
    mask = _sphere_mask(image, (6.3, 24.0, 10.0), 3.0)  # near two edges: the crop pads there
    shape = (24, 16, 12)
    out, out_mask = CropPad(shape)(image, mask)
    assert out.GetSize() == shape
    assert out_mask.GetSize() == shape
    assert out.GetSpacing() == image.GetSpacing()
    assert out.GetDirection() == image.GetDirection()

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    centroid = np.array(stats.GetCentroid(1))
    centre = np.array(out.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in shape]))
    assert (np.abs(centroid - centre) <= np.array(image.GetSpacing()) + 1e-9).all()

    # Every output voxel is the input voxel at the same physical point, or -1000 outside it.
    values, source = sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(image)
    offset = np.rint(
        np.array(image.TransformPhysicalPointToContinuousIndex(out.GetOrigin()))
    ).astype(int)
    zyx = np.indices(values.shape).reshape(3, -1) + offset[::-1, None]  # source (z, y, x)
    inside = ((zyx >= 0) & (zyx < np.array(source.shape)[:, None])).all(axis=0)
    flat = values.reshape(-1)
    np.testing.assert_array_equal(flat[inside], source[tuple(zyx[:, inside])])
    assert (flat[~inside] == -1000.0).all()
    padded = int((~inside).sum())
    assert padded > 0  # the test did exercise padding
    m = sitk.GetArrayFromImage(out_mask)
    assert m.sum() == sitk.GetArrayFromImage(mask).sum()  # the whole lesion is kept


def test_croppad_without_a_mask_uses_the_image_centre() -> None:
    image = _image((21, 20, 9), (1.0, 0.7, 2.5))
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    shape = (11, 12, 5)
    out, _ = CropPad(shape)(image, empty)
    assert out.GetSize() == shape
    middle = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    centre = out.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in shape])
    assert (np.abs(np.subtract(middle, centre)) <= np.array(image.GetSpacing()) + 1e-9).all()
    i, j, k = np.rint(image.TransformPhysicalPointToContinuousIndex(out.GetOrigin())).astype(int)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(out),
        sitk.GetArrayFromImage(image)[k : k + shape[2], j : j + shape[1], i : i + shape[0]],
    )


def test_window_maps_the_window_to_unit_range_and_clips() -> None:
    level, width = 40.0, 400.0
    hu = np.array([-2000, -160, 40, 140, 240, 3000], dtype=np.float32).reshape(1, 1, 6)
    image = sitk.GetImageFromArray(hu)
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    out, out_mask = Window(level, width)(image, mask)
    assert out.GetPixelID() == sitk.sitkFloat32
    assert out_mask is mask
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(out).ravel(), [0.0, 0.0, 0.5, 0.75, 1.0, 1.0], atol=1e-6
    )


def test_pipeline_describe_lists_every_parameter() -> None:
    steps = (Reorient(), Resample((1.5, 1.5, 1.5)), CropPad((32, 32, 16)), Window(40, 400))
    pipeline = Pipeline(steps)
    assert pipeline.describe() == [
        {"step": "Reorient", "orientation": "LPS"},
        {
            "step": "Resample",
            "spacing_mm": (1.5, 1.5, 1.5),
            "fill_hu": -1000.0,
            "mask_interpolator": "nearest",
        },
        {"step": "CropPad", "shape": (32, 32, 16), "fill_hu": -1000.0, "body_threshold": None},
        {"step": "Window", "level": 40, "width": 400},
    ]
    changed = [
        Pipeline((Reorient(), steps[1], steps[2], Window(40, 350))),
        Pipeline((Reorient(), Resample((1.0, 1.0, 1.0)), steps[2], steps[3])),
        Pipeline((Reorient(), steps[1], CropPad((32, 32, 16), fill_hu=0.0), steps[3])),
        Pipeline(steps[:3]),
    ]
    for other in changed:
        assert other.describe() != pipeline.describe()
    assert Pipeline(steps).describe() == pipeline.describe()

    # And the steps compose: the pipeline's output is each step's in turn.
    image = _image((30, 30, 10), (0.9, 0.9, 2.0))
    mask = _sphere_mask(image, (15, 15, 5), 5.0)
    out, out_mask = pipeline(image, mask)
    assert out.GetSize() == (32, 32, 16) and out_mask.GetSize() == (32, 32, 16)
    values = sitk.GetArrayFromImage(out)
    assert values.min() >= 0.0 and values.max() <= 1.0


def test_reorient_keeps_physical_content() -> None:
    flipped = (-1, 0, 0, 0, 1, 0, 0, 0, -1)
    image = _image((7, 6, 5), (0.9, 1.1, 2.0), origin=(10.0, -4.0, 3.0), direction=flipped)
    mask = sitk.Cast(image > 0, sitk.sitkUInt8)
    out, out_mask = Reorient()(image, mask)
    assert out.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert out.GetSize() == image.GetSize()
    for index in np.ndindex(image.GetSize()):
        point = image.TransformIndexToPhysicalPoint(tuple(int(v) for v in index))
        there = out.TransformPhysicalPointToIndex(point)
        assert out.GetPixel(there) == image.GetPixel(*index)
        assert out_mask.GetPixel(there) == mask.GetPixel(*index)
