"""Imaging: reading a DICOM series into geometry-true HU, rigid registration measured by target
registration error against a known motion, and the preprocessing steps.

Registration accuracy is judged as TRE (mean distance between where the estimated transform
and the true one send each foreground point), not by the metric value, so a registration that
converges to the wrong place fails. Each TRE test also checks that the identity transform is
far from the truth, so the bar cannot be met by doing nothing.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import nibabel
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from support.transform_helpers import rotation as _rotation
from support.transform_helpers import tre as _tre

from radflow.errors import QuarantineError
from radflow.imaging.preprocess import CropPad, Pipeline, Reorient, Resample, Window
from radflow.imaging.read import read_series, slice_order
from radflow.imaging.register import resample_onto, rigid_register
from radflow.synth import SynthSpec, SynthStudy, synthesize

SMALL = SynthSpec(studies=1, rows=48, columns=48, slices=20)
FULL = SynthSpec(studies=2)  # default 64 x 64 x 48 geometry; study 1 has a moved 2nd series
TRE_BAR_MM = 1.0

Points = npt.NDArray[np.float64]  # (n, 3) physical points, x y z

# --------------------------------------------------------------------------- helpers


def _series_files(study: SynthStudy, number: int) -> list[Path]:
    return sorted(f for f in study.files if f.parent.name == f"S{number}")


def _physical_points(image: sitk.Image, mask: npt.NDArray[np.bool_]) -> Points:
    """Physical points of the voxels where `mask` (a z, y, x array) is true."""
    ijk = np.argwhere(mask)[:, ::-1].astype(np.float64)  # (z, y, x) -> (i, j, k)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    points: Points = np.array(image.GetOrigin()) + (ijk * spacing) @ direction.T
    return points


def _rigid(
    rot: npt.NDArray[np.float64], centre: Points, shift: tuple[float, float, float]
) -> sitk.Euler3DTransform:
    """x -> rot (x - centre) + centre + shift, as a sitk transform."""
    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(float(c) for c in centre))
    t.SetMatrix(tuple(float(v) for v in rot.ravel()))
    t.SetTranslation(shift)
    return t


# --------------------------------------------------------------------------- read_series


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The files of one 48 x 48 x 20 series, IM0001 (lowest z) first."""
    root = tmp_path_factory.mktemp("small")
    (study,) = synthesize(root / "inbox", root / "labels.csv", SMALL)
    files = _series_files(study, 1)
    assert len(files) == SMALL.slices
    return files


def test_read_series_geometry_and_hounsfield_units(small: list[Path]) -> None:
    image = read_series(small)
    assert image.GetSize() == (SMALL.columns, SMALL.rows, SMALL.slices)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSpacing() == (SMALL.pixel_spacing, SMALL.pixel_spacing, SMALL.slice_thickness)
    first = pydicom.dcmread(small[0])
    assert image.GetOrigin() == tuple(float(v) for v in first.ImagePositionPatient)
    assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)

    hu = sitk.GetArrayFromImage(image)
    expected = np.stack(
        [
            pydicom.dcmread(f).pixel_array.astype(np.float32) * float(first.RescaleSlope)
            + float(first.RescaleIntercept)
            for f in small
        ]
    )
    np.testing.assert_array_equal(hu, expected)
    assert (hu[:, 0, 0] == -1000.0).all()  # the corners are air: exactly -1000 after rescale
    assert (hu > -500).mean() > 0.2  # and there is a body


def test_slice_order_comes_from_positions_not_names(small: list[Path], tmp_path: Path) -> None:
    reference = read_series(small)
    # Copy slice k to a name that sorts in reverse (IM0001 holds the highest z), then shuffle.
    renamed = []
    for k, f in enumerate(small):
        target = tmp_path / f"IM{len(small) - k:04d}.dcm"
        shutil.copyfile(f, target)
        renamed.append(target)
    shuffled = renamed[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != renamed

    assert slice_order(shuffled) == renamed  # lowest z first, whatever the names say
    image = read_series(shuffled)
    assert image.GetSize() == reference.GetSize()
    assert image.GetOrigin() == reference.GetOrigin()
    assert image.GetSpacing() == reference.GetSpacing()
    assert image.GetDirection() == reference.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))


def test_a_missing_middle_slice_is_quarantined(small: list[Path]) -> None:
    gappy = small[: len(small) // 2] + small[len(small) // 2 + 1 :]
    with pytest.raises(QuarantineError) as caught:
        read_series(gappy)
    assert caught.value.reason == "missing slices"
    assert caught.value.detail == "gap of 4.00 mm where 2.00 mm is expected"


def test_a_slice_without_position_is_quarantined(small: list[Path], tmp_path: Path) -> None:
    files = []
    for f in small:
        shutil.copyfile(f, tmp_path / f.name)
        files.append(tmp_path / f.name)
    broken = pydicom.dcmread(files[5])
    del broken.ImagePositionPatient
    broken.save_as(files[5], enforce_file_format=True)
    with pytest.raises(QuarantineError) as caught:
        read_series(files)
    assert caught.value.reason == "missing geometry"


def test_an_empty_series_is_quarantined() -> None:
    with pytest.raises(QuarantineError):
        read_series([])


# --------------------------------------------------------------------------- registration


@pytest.fixture(scope="module")
def moved_study(tmp_path_factory: pytest.TempPathFactory) -> SynthStudy:
    root = tmp_path_factory.mktemp("full")
    studies = synthesize(root / "inbox", root / "labels.csv", FULL)
    return next(s for s in studies if len(s.series_uids) == 2)


def _true_motion(s2_file: Path, centre: Points) -> sitk.Euler3DTransform:
    """A from S2's ImageComments: A(x) = R_z(theta) (x - c) + c + t, c the volume centre.

    synth._moved builds Euler3DTransform(centre=0, angleZ=theta, translation=t) and resamples
    with its inverse, so anatomy at x in S1 appears at A(x) in S2; its physical coordinates
    put the volume centre at the origin, which the caller checks.
    """
    comment = str(pydicom.dcmread(s2_file, stop_before_pixels=True).ImageComments)
    found = re.search(r"motion rz=([-+.\d]+)deg t=\(([-+.\d]+),([-+.\d]+),([-+.\d]+)\)mm", comment)
    assert found, comment
    angle, tx, ty, tz = (float(v) for v in found.groups())
    return _rigid(_rotation((0.0, 0.0, 1.0), angle), centre, (tx, ty, tz))


def test_registration_recovers_the_synthetic_motion(moved_study: SynthStudy) -> None:
    fixed = read_series(_series_files(moved_study, 1))
    moving = read_series(_series_files(moved_study, 2))
    size = np.array(fixed.GetSize())
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    assert np.allclose(centre, 0.0, atol=1e-6)  # the synthetic volume is centred on 0
    truth = _true_motion(_series_files(moved_study, 2)[0], centre)
    body = _physical_points(fixed, sitk.GetArrayFromImage(fixed) > -500)
    assert len(body) > 10_000

    # The convention, checked without registration: pulling S2 through A onto S1's grid
    # gives S1 back (up to interpolation), and neither the identity nor A^-1 does.
    def misfit(t: sitk.Transform) -> float:
        pulled = sitk.GetArrayFromImage(resample_onto(moving, fixed, t))
        inside = sitk.GetArrayFromImage(fixed) > -500
        return float(np.abs(pulled - sitk.GetArrayFromImage(fixed))[inside].mean())

    assert misfit(truth) < 0.5 * misfit(sitk.Euler3DTransform())
    assert misfit(truth) < 0.5 * misfit(truth.GetInverse())

    identity_tre = _tre(sitk.Euler3DTransform(), truth, body)
    assert identity_tre > 2 * TRE_BAR_MM  # doing nothing fails the bar: the test can fail

    result = rigid_register(fixed, moving)
    tre = _tre(result.transform, truth, body)
    assert tre < TRE_BAR_MM, f"TRE {tre:.3f} mm (identity {identity_tre:.3f} mm)"
    assert _tre(result.transform, truth.GetInverse(), body) > TRE_BAR_MM  # direction matters
    assert result.iterations > 0


def test_registration_recovers_an_oblique_motion_of_a_real_mri() -> None:
    path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
    fixed = sitk.ReadImage(path, sitk.sitkFloat32)
    size = np.array(fixed.GetSize())
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    truth = _rigid(_rotation((1.0, 2.0, 2.0), 5.0), centre, (4.0, -3.0, 2.0))
    # Resample pulls output point p from T(p): with T = A^-1 the anatomy moves by A.
    moving = sitk.Resample(fixed, truth.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    head = sitk.GetArrayFromImage(sitk.OtsuThreshold(fixed, 0, 1)) > 0
    assert 0.1 < head.mean() < 0.9
    points = _physical_points(fixed, head)

    identity_tre = _tre(sitk.Euler3DTransform(), truth, points)
    assert identity_tre > 2 * TRE_BAR_MM

    result = rigid_register(fixed, moving)
    tre = _tre(result.transform, truth, points)
    assert tre < TRE_BAR_MM, f"TRE {tre:.3f} mm (identity {identity_tre:.3f} mm)"


# --------------------------------------------------------------------------- preprocessing


def _image(
    size: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (-12.5, 30.0, 7.25),
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    seed: int = 0,
) -> sitk.Image:
    """Random HU in [-900, 900] (never -1000, which marks padding) on the given grid."""
    values = np.random.default_rng(seed).uniform(-900, 900, size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


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
