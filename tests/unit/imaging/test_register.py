"""Registration: rigid and affine accuracy as TRE against a known motion, determinism, the
transform file, and the QC image.

TRE is the mean distance between where the estimated and the true transform send each
foreground point of the fixed image; every case also checks that the identity is far from the
truth, so the bar cannot be met by doing nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import nibabel
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from support.transform_helpers import rotation as _rotation
from support.transform_helpers import tre as _tre

from radflow.imaging.qc import checkerboard_png
from radflow.imaging.read import read_series
from radflow.imaging.register import (
    WORKING_SPACING_MM,
    pyramid,
    register,
    resample_onto,
    rigid_register,
    working_copy,
    write_transform,
)
from radflow.synth import SynthSpec, SynthStudy, synthesize

TRE_BAR_MM = 1.0
ANATOMICAL = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")

Points = npt.NDArray[np.float64]  # (n, 3) physical points, x y z

# --------------------------------------------------------------------------- helpers


def _physical_points(image: sitk.Image, mask: npt.NDArray[np.bool_]) -> Points:
    """Physical points of the voxels where `mask` (a z, y, x array) is true."""
    ijk = np.argwhere(mask)[:, ::-1].astype(np.float64)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points: Points = (
        np.array(image.GetOrigin()) + (ijk * np.array(image.GetSpacing())) @ direction.T
    )
    return points


def _motion(
    matrix: npt.NDArray[np.float64], centre: Points, shift: tuple[float, float, float]
) -> sitk.AffineTransform:
    """A(x) = matrix (x - centre) + centre + shift."""
    t = sitk.AffineTransform(3)
    t.SetCenter(tuple(float(c) for c in centre))
    t.SetMatrix(tuple(float(v) for v in matrix.ravel()))
    t.SetTranslation(shift)
    return t


def _centre(image: sitk.Image) -> Points:
    size = np.array(image.GetSize())
    return np.array(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))


def _moved(image: sitk.Image, truth: sitk.Transform, fill: float) -> sitk.Image:
    """`image` with its anatomy moved by A = `truth`.

    Resample pulls output point p from input point T(p); with T = A^-1 the anatomy at x
    appears at A(x), so registering fixed=image, moving=result must recover A.
    """
    return sitk.Resample(image, truth.GetInverse(), sitk.sitkLinear, fill, sitk.sitkFloat32)


@pytest.fixture(scope="module")
def anatomical() -> tuple[sitk.Image, Points]:
    """nibabel's real MRI (33 x 41 x 25, 2 mm) and its head's physical points."""
    fixed = sitk.ReadImage(ANATOMICAL, sitk.sitkFloat32)
    head = sitk.GetArrayFromImage(sitk.OtsuThreshold(fixed, 0, 1)) > 0
    assert 0.1 < head.mean() < 0.9
    return fixed, _physical_points(fixed, head)


@pytest.fixture(scope="module")
def synthetic_ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[sitk.Image, Points]:
    """A synthetic CT (default 64 x 64 x 48, 0.9 x 0.9 x 2 mm) and its body's points."""
    root = tmp_path_factory.mktemp("ct")
    (study,) = synthesize(root / "inbox", root / "labels.csv", SynthSpec(studies=1))
    fixed = read_series(sorted(f for f in study.files if f.parent.name == "S1"))
    body = sitk.GetArrayFromImage(fixed) > -500
    return fixed, _physical_points(fixed, body)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize(
    ("axis", "degrees", "shift"),
    [
        ((1.0, 2.0, 2.0), 5.0, (4.0, -3.0, 2.0)),
        ((2.0, -1.0, 1.0), 10.0, (-6.0, 5.0, -4.0)),
        ((1.0, 1.0, -3.0), 15.0, (5.7, -5.7, 5.7)),  # |t| = 9.9 mm
    ],
)
def test_rigid_recovers_an_oblique_motion_of_a_real_mri(
    anatomical: tuple[sitk.Image, Points],
    axis: tuple[float, float, float],
    degrees: float,
    shift: tuple[float, float, float],
) -> None:
    fixed, points = anatomical
    truth = _motion(_rotation(axis, degrees), _centre(fixed), shift)
    moving = _moved(fixed, truth, 0.0)
    identity_tre = _tre(sitk.Euler3DTransform(), truth, points)
    assert identity_tre > 2 * TRE_BAR_MM

    result = register(fixed, moving)
    tre = _tre(result.transform, truth, points)
    assert tre < TRE_BAR_MM, f"TRE {tre:.3f} mm (identity {identity_tre:.3f} mm)"
    assert _tre(result.transform, truth.GetInverse(), points) > TRE_BAR_MM  # direction matters
    assert result.kind == "rigid" and isinstance(result.transform, sitk.Euler3DTransform)
    assert result.iterations > 0 and result.metric < 0


def test_rigid_recovers_15_degrees_and_10_mm_on_a_synthetic_ct(
    synthetic_ct: tuple[sitk.Image, Points],
) -> None:
    fixed, points = synthetic_ct
    assert len(points) > 10_000
    truth = _motion(_rotation((2.0, -1.0, 2.0), 15.0), _centre(fixed), (6.0, -8.0, 0.0))
    moving = _moved(fixed, truth, -1000.0)
    identity_tre = _tre(sitk.Euler3DTransform(), truth, points)
    assert identity_tre > 5 * TRE_BAR_MM

    # 0.9 mm pixels: the default 2 mm working resolution really registers shrunk copies.
    assert working_copy(fixed, WORKING_SPACING_MM).GetSize() != fixed.GetSize()
    result = rigid_register(fixed, moving)
    tre = _tre(result.transform, truth, points)
    assert tre < TRE_BAR_MM, f"TRE {tre:.3f} mm (identity {identity_tre:.3f} mm)"


def test_affine_recovers_a_known_scaling(anatomical: tuple[sitk.Image, Points]) -> None:
    fixed, points = anatomical
    truth = _motion(1.05 * _rotation((1.0, 0.0, 1.0), 4.0), _centre(fixed), (2.0, -3.0, 1.0))
    moving = _moved(fixed, truth, 0.0)

    rigid = register(fixed, moving, "rigid")
    affine = register(fixed, moving, "affine")
    rigid_tre, affine_tre = (
        _tre(rigid.transform, truth, points),
        _tre(affine.transform, truth, points),
    )
    assert rigid_tre > TRE_BAR_MM  # a rigid transform cannot scale: the affine stage is needed
    assert affine_tre < TRE_BAR_MM, f"affine TRE {affine_tre:.3f} mm (rigid {rigid_tre:.3f} mm)"
    assert affine.kind == "affine" and isinstance(affine.transform, sitk.AffineTransform)
    scales = np.linalg.svd(np.array(affine.transform.GetMatrix()).reshape(3, 3), compute_uv=False)
    np.testing.assert_allclose(scales, 1.05, atol=0.01)
    assert affine.metric <= rigid.metric  # more freedom, a better (lower) Mattes MI


def test_working_copy_keeps_the_physical_extent(synthetic_ct: tuple[sitk.Image, Points]) -> None:
    fixed, _ = synthetic_ct
    copy = working_copy(fixed, 2.0)
    assert copy.GetPixelID() == sitk.sitkFloat32
    assert all(s <= 2.0 + 1e-9 for s in copy.GetSpacing())  # never coarser than the bar
    assert copy.GetSpacing() == pytest.approx((1.8, 1.8, 2.0))
    np.testing.assert_allclose(_centre(copy), _centre(fixed), atol=1e-6)  # bins stay centred
    assert working_copy(fixed, None).GetSize() == fixed.GetSize()
    # The reader's float32 is handed on as it is (a Cast would copy it: 0.08 s at 512 x 512 x
    # 300); another type is cast, the caller's image left alone.
    assert fixed.GetPixelID() == sitk.sitkFloat32 and working_copy(fixed, None) is fixed
    as_int = sitk.Cast(fixed, sitk.sitkInt16)
    assert working_copy(as_int, None).GetPixelID() == sitk.sitkFloat32
    assert as_int.GetPixelID() == sitk.sitkInt16
    with pytest.raises(ValueError, match="levels"):
        register(fixed, fixed, levels=0)


def test_pyramid_levels_are_box_averaged_copies_coarsest_first(
    synthetic_ct: tuple[sitk.Image, Points],
) -> None:
    fixed, _ = synthetic_ct  # 64 x 64 x 48, 0.9 x 0.9 x 2 mm
    levels = pyramid(fixed, 2.0, 3)
    spacings = [level.GetSpacing() for level in levels]
    assert spacings == [
        pytest.approx(s) for s in ((7.2, 7.2, 8.0), (3.6, 3.6, 4.0), (1.8, 1.8, 2.0))
    ]
    assert [level.GetSize() for level in levels] == [(8, 8, 12), (16, 16, 24), (32, 32, 48)]
    for level in levels:
        assert level.GetPixelID() == sitk.sitkFloat32
        np.testing.assert_allclose(_centre(level), _centre(fixed), atol=1e-6)
    # The finest level is the working copy itself; a bin's value is its voxels' mean.
    assert levels[-1].GetSize() == working_copy(fixed, 2.0).GetSize()
    coarse = sitk.GetArrayFromImage(levels[0])
    native = sitk.GetArrayFromImage(fixed).astype(np.float64)
    assert coarse[0, 0, 0] == pytest.approx(native[:4, :8, :8].mean(), abs=1e-3)
    # Native spacing: each level halves the previous one's resolution on every axis.
    assert [level.GetSize() for level in pyramid(fixed, None, 2)] == [(32, 32, 24), (64, 64, 48)]


# --------------------------------------------------------------------------- synthetic motion


def _series(study: SynthStudy, number: int) -> list[Path]:
    return sorted(f for f in study.files if f.parent.name == f"S{number}")


@pytest.fixture(scope="module")
def moved_study(tmp_path_factory: pytest.TempPathFactory) -> SynthStudy:
    root = tmp_path_factory.mktemp("full")
    studies = synthesize(root / "inbox", root / "labels.csv", SynthSpec(studies=2))
    return next(s for s in studies if len(s.series_uids) == 2)


def _true_motion(s2_file: Path, centre: Points) -> sitk.AffineTransform:
    """A from S2's ImageComments: A(x) = R_z(theta) (x - c) + c + t, c the volume centre.

    synth._moved builds Euler3DTransform(centre=0, angleZ=theta, translation=t) and resamples
    with its inverse, so anatomy at x in S1 appears at A(x) in S2; its physical coordinates
    put the volume centre at the origin, which the caller checks.
    """
    comment = str(pydicom.dcmread(s2_file, stop_before_pixels=True).ImageComments)
    found = re.search(r"motion rz=([-+.\d]+)deg t=\(([-+.\d]+),([-+.\d]+),([-+.\d]+)\)mm", comment)
    assert found, comment
    angle, tx, ty, tz = (float(v) for v in found.groups())
    return _motion(_rotation((0.0, 0.0, 1.0), angle), centre, (tx, ty, tz))


def test_registration_recovers_the_synthetic_motion(moved_study: SynthStudy) -> None:
    fixed = read_series(_series(moved_study, 1))
    moving = read_series(_series(moved_study, 2))
    size = np.array(fixed.GetSize())
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    assert np.allclose(centre, 0.0, atol=1e-6)  # the synthetic volume is centred on 0
    truth = _true_motion(_series(moved_study, 2)[0], centre)
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


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("suffix", [".tfm", ".h5"])
@pytest.mark.parametrize("kind", ["rigid", "affine"])
def test_written_transform_reads_back_to_the_same_mapping(
    anatomical: tuple[sitk.Image, Points], tmp_path: Path, suffix: str, kind: str
) -> None:
    fixed, points = anatomical
    truth = _motion(_rotation((0.0, 1.0, 1.0), 8.0), _centre(fixed), (3.0, 1.0, -2.0))
    reg = register(fixed, _moved(fixed, truth, 0.0), kind)  # type: ignore[arg-type]
    path = write_transform(reg, tmp_path / f"T{suffix}")
    back = sitk.ReadTransform(str(path))
    for p in (points[0], points[len(points) // 2], (100.0, -50.0, 25.0)):
        np.testing.assert_allclose(
            back.TransformPoint(tuple(p)), reg.transform.TransformPoint(tuple(p)), atol=1e-9
        )


def test_checkerboard_png_is_deterministic_and_shows_misregistration(
    anatomical: tuple[sitk.Image, Points],
) -> None:
    fixed, _ = anatomical
    truth = _motion(_rotation((0.0, 0.0, 1.0), 10.0), _centre(fixed), (4.0, 0.0, 0.0))
    moving = _moved(fixed, truth, 0.0)
    reg = register(fixed, moving)
    aligned = resample_onto(moving, fixed, reg.transform)
    png = checkerboard_png(fixed, aligned)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert checkerboard_png(fixed, aligned) == png
    assert b"tIME" not in png and b"Software" not in png  # no timestamp or version tag
    unregistered = resample_onto(moving, fixed, sitk.Euler3DTransform())
    assert checkerboard_png(fixed, unregistered) != png
    overlay = checkerboard_png(fixed, aligned, style="overlay", window=(0.0, 12000.0))
    assert overlay.startswith(b"\x89PNG") and overlay != png
    assert (
        hashlib.sha256(overlay).digest()
        == hashlib.sha256(
            checkerboard_png(fixed, aligned, style="overlay", window=(0.0, 12000.0))
        ).digest()
    )
    with pytest.raises(ValueError, match="grid"):
        checkerboard_png(fixed, sitk.Shrink(aligned, [2, 2, 2]))


# --------------------------------------------------------------------------- robustness


def test_rigid_recovers_random_motions_up_to_15_degrees_and_10_mm(
    anatomical: tuple[sitk.Image, Points],
) -> None:
    """Twelve random oblique motions of the small real MRI, where the coarse level is tiny."""
    fixed, points = anatomical
    rng = np.random.default_rng(2026)
    tres = []
    for _ in range(12):
        axis = rng.normal(size=3)
        degrees = float(rng.uniform(3, 15) * rng.choice([-1, 1]))
        direction = rng.normal(size=3)
        shift = direction / np.linalg.norm(direction) * rng.uniform(2, 10)
        truth = _motion(
            _rotation((axis[0], axis[1], axis[2]), degrees),
            _centre(fixed),
            (float(shift[0]), float(shift[1]), float(shift[2])),
        )
        tres.append(_tre(register(fixed, _moved(fixed, truth, 0.0)).transform, truth, points))
    assert max(tres) < TRE_BAR_MM, [round(t, 3) for t in tres]


def test_rigid_on_a_larger_ct_with_capped_samples(tmp_path: Path) -> None:
    """192 x 192 x 64 CT: the working copy has ~600k voxels, so each level samples the cap."""
    spec = SynthSpec(studies=1, rows=192, columns=192, slices=64)
    (study,) = synthesize(tmp_path / "inbox", tmp_path / "labels.csv", spec)
    fixed = read_series(sorted(f for f in study.files if f.parent.name == "S1"))
    points = _physical_points(fixed, sitk.GetArrayFromImage(fixed) > -500)[::20]
    truth = _motion(_rotation((1.0, -2.0, 1.0), 15.0), _centre(fixed), (-7.0, 0.0, 7.0))
    result = rigid_register(fixed, _moved(fixed, truth, -1000.0))
    tre = _tre(result.transform, truth, points)
    assert tre < TRE_BAR_MM, f"TRE {tre:.3f} mm"


def test_itk_stays_on_one_thread_until_the_last_of_overlapping_registrations_ends() -> None:
    """Two studies register at once on a flow's task threads: the one that ends first must
    not give the other's next pyramid level every thread back (a resumed ingest's transform
    then differed from a clean run's in the seventh digit)."""
    import threading

    from radflow.imaging.register import _one_thread

    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads
    before = threads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    try:
        inside, first_done, seen = threading.Event(), threading.Event(), []

        def second() -> None:
            with _one_thread():
                inside.set()
                first_done.wait(10)
                seen.append(threads())  # the other registration has ended by now

        worker = threading.Thread(target=second)
        with _one_thread():
            worker.start()
            assert inside.wait(10)
        first_done.set()
        worker.join(10)
        assert seen == [1]
        assert threads() == 2
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
