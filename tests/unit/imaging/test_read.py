"""Reading images with true geometry: DICOM series (single-frame, enhanced multi-frame,
compressed), NIfTI, and the inspection summary.

Expected geometry is computed here from what the headers say (or from nibabel's affine), not
from the reader. Resampling is checked with a field that is affine in world coordinates:
linear interpolation reproduces such a field exactly, so every resampled voxel must hold the
field's value at its own world position — a misplaced voxel shows as a wrong value.
"""

from __future__ import annotations

import glob
import json
import random
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from radflow.errors import QuarantineError
from radflow.imaging.inspect import format_inspection, inspect_path
from radflow.imaging.nifti import read_nifti
from radflow.imaging.read import (
    read_series,
    read_series_with_warnings,
    slice_order,
    split_series,
)
from radflow.synth import SynthSpec, SynthStudy, synthesize

SPEC = SynthSpec(studies=1, rows=24, columns=20, slices=12, pixel_spacing=0.7, slice_thickness=2.5)
SMALL = SynthSpec(studies=1, rows=48, columns=48, slices=20)
TWO = SynthSpec(studies=2, rows=20, columns=16, slices=8)  # study 1 has two series
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
LPS = np.diag([-1.0, -1.0, 1.0])

Change = Callable[[Dataset, int], None]
Array = npt.NDArray[np.float64]

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One axial 20 x 24 x 12 CT series (0.7 mm pixels, 2.5 mm slices), lowest z first."""
    root = tmp_path_factory.mktemp("series")
    (study,) = synthesize(root / "inbox", root / "labels.csv", SPEC)
    files = sorted(study.files)
    assert len(files) == SPEC.slices
    return files


def _ds(x: float) -> str:
    """A DS string well within 16 characters."""
    s = f"{x:.8f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _rewrite(files: Sequence[Path], out: Path, *changes: Change, seed: int = 0) -> list[Path]:
    """Copies of `files` (slice k is files[k]) after each `change(ds, k)`, under random names,
    returned in shuffled order: nothing but the headers can tell the reader the order."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written = []
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        for change in changes:
            change(ds, k)
        target = out / f"{rng.getrandbits(64):016x}.dcm"
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    rng.shuffle(written)
    return written


def _rotation(axis: tuple[float, float, float], degrees: float) -> Array:
    """Rodrigues' formula: rotation by `degrees` about `axis`."""
    u = np.array(axis, dtype=np.float64)
    u /= np.linalg.norm(u)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    a = np.deg2rad(degrees)
    rot: Array = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)
    return rot


def _position(ds: Dataset) -> Array:
    return np.array([float(v) for v in ds.ImagePositionPatient])


def _set_position(ds: Dataset, p: Array) -> None:
    ds.ImagePositionPatient = [_ds(v) for v in p]


def _iop_axes(ds: Dataset) -> tuple[Array, Array]:
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    return iop[:3], iop[3:]


def _linear_field(ds: Dataset, k: int) -> None:
    """Stored 3 i + 5 j + 100 and intercept 10 z: the real values are affine in world
    coordinates for any stack whose slices are translates of each other along a line,
    and the intercept differs per slice, so per-slice rescale is exercised too."""
    j, i = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
    ds.PixelData = (3 * i + 5 * j + 100).astype(np.uint16).tobytes()
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = _ds(10 * _position(ds)[2])


def _samples(files: Sequence[Path]) -> tuple[Array, Array]:
    """World position (n, 3) and real value (n,) of every pixel of every file."""
    points, values = [], []
    for f in files:
        ds = pydicom.dcmread(f)
        row, col = _iop_axes(ds)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        j, i = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
        p = _position(ds) + i[..., None] * dx * row + j[..., None] * dy * col
        points.append(p.reshape(-1, 3))
        real = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        values.append(real.reshape(-1))
    return np.concatenate(points), np.concatenate(values)


def _world(image: sitk.Image) -> Array:
    """World position of every voxel, shaped like GetArrayFromImage (z, y, x, 3)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).astype(np.float64) * np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    world: Array = np.array(image.GetOrigin()) + ijk @ direction.T
    return world


def _assert_affine_field(image: sitk.Image, files: Sequence[Path], fill: float) -> None:
    """Every voxel off the border holds the input's affine field at its place.

    The border is left out: there ITK's linear interpolation holds the edge value for up
    to half a pixel beyond the data rather than extrapolate.
    """
    points, values = _samples(files)
    design = np.column_stack([points, np.ones(len(points))])
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    assert np.abs(design @ coef - values).max() < 1e-6  # the premise: the field is affine
    erode = sitk.BinaryErodeImageFilter()
    erode.SetKernelRadius((1, 1, 0))
    erode.SetBoundaryToForeground(False)  # the grid's edge is a border too
    inside = erode.Execute(sitk.Cast(image != fill, sitk.sitkUInt8))
    mask = sitk.GetArrayFromImage(inside).astype(bool)
    assert mask.mean() > 0.5
    expected = _world(image) @ coef[:3] + coef[3]
    got = sitk.GetArrayFromImage(image)
    np.testing.assert_allclose(got[mask], expected[mask], atol=2e-3)


def _direction(image: sitk.Image) -> Array:
    return np.array(image.GetDirection()).reshape(3, 3)


# --------------------------------------------------------------------------- geometry


def test_oblique_anisotropic_shuffled_series(series: list[Path], tmp_path: Path) -> None:
    reference = read_series(series)
    rot = _rotation((1.0, 2.0, 3.0), 25.0)
    shift = np.array([10.0, -5.0, 30.0])

    def oblique(ds: Dataset, k: int) -> None:
        _set_position(ds, rot @ _position(ds) + shift)
        ds.ImageOrientationPatient = [_ds(v) for v in (*rot[:, 0], *rot[:, 1])]

    files = _rewrite(series, tmp_path, oblique)
    image, warned = read_series_with_warnings(files)
    assert warned == []
    assert image.GetSize() == (SPEC.columns, SPEC.rows, SPEC.slices)
    assert image.GetSpacing() == pytest.approx((0.7, 0.7, 2.5), abs=1e-6)
    # The direction's columns are the IOP's row and column directions and their cross product.
    row, col = _iop_axes(pydicom.dcmread(files[0]))
    np.testing.assert_allclose(
        _direction(image), np.column_stack([row, col, np.cross(row, col)]), atol=1e-8
    )
    np.testing.assert_allclose(_direction(image), rot, atol=1e-7)
    lowest = min(files, key=lambda f: float(_position(pydicom.dcmread(f)) @ rot[:, 2]))
    assert image.GetOrigin() == tuple(_position(pydicom.dcmread(lowest)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))
    for index in [(0, 0, 0), (19, 23, 11), (5, 17, 3), (12, 2, 8)]:
        expected = rot @ np.array(reference.TransformIndexToPhysicalPoint(index)) + shift
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index), expected, atol=1e-5)
    # GDCM, through SimpleITK, agrees once given the files in our order.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in slice_order(files)])
    gdcm = reader.Execute()
    np.testing.assert_allclose(gdcm.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(gdcm.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(gdcm.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(gdcm), sitk.GetArrayFromImage(image))


def _tilts() -> list[tuple[str, Change]]:
    t = np.tan(np.deg2rad(15.0))

    def sheared(ds: Dataset, k: int) -> None:  # positions drift along y by tan(15 deg) z
        p = _position(ds)
        _set_position(ds, p + np.array([0.0, t * p[2], 0.0]))

    def tilted(ds: Dataset, k: int) -> None:  # a scanner's tilt: planes tilted, table along z
        c, s = np.cos(np.deg2rad(15.0)), np.sin(np.deg2rad(15.0))
        ds.ImageOrientationPatient = ["1", "0", "0", "0", _ds(c), _ds(s)]

    return [("sheared positions", sheared), ("tilted planes", tilted)]


@pytest.mark.parametrize(("name", "tilt"), _tilts(), ids=[n for n, _ in _tilts()])
def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(
    series: list[Path], tmp_path: Path, name: str, tilt: Change
) -> None:
    files = _rewrite(series, tmp_path, tilt, _linear_field)
    image, warned = read_series_with_warnings(files)
    assert len(warned) == 1 and "15.00 degrees" in warned[0], warned
    direction = _direction(image)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)  # orthogonal
    row, col = _iop_axes(pydicom.dcmread(files[0]))
    np.testing.assert_allclose(
        direction, np.column_stack([row, col, np.cross(row, col)]), atol=1e-8
    )
    # 11 gaps of 2.5 mm shear the stack by 11 * 2.5 * tan(15 deg) = 7.37 mm along the column
    # direction (up to 2.5 mm * cos(15 deg) slice spacing for tilted planes): the grid grows
    # by ceil(shift / 0.7 mm) rows to hold every slice where it truly is.
    gap = 2.5 if name.startswith("sheared") else 2.5 * np.cos(np.deg2rad(15))
    grow = int(np.ceil(11 * gap * np.tan(np.deg2rad(15)) / 0.7 - 1e-6))
    assert image.GetSize() == (SPEC.columns, SPEC.rows + grow, SPEC.slices)
    assert image.GetSpacing() == pytest.approx((0.7, 0.7, gap), abs=1e-6)
    _assert_affine_field(image, files, fill=-1000.0)


@pytest.mark.parametrize(("name", "tilt"), _tilts(), ids=[n for n, _ in _tilts()])
def test_gantry_tilt_keeps_a_landmark_in_place(
    series: list[Path], tmp_path: Path, name: str, tilt: Change
) -> None:
    k0, (j0, i0) = 7, (14, 9)  # a 3 x 3 bright block centred on pixel (row 14, column 9)

    def landmark(ds: Dataset, k: int) -> None:
        pixels = np.full((ds.Rows, ds.Columns), 1024, dtype=np.uint16)  # 0 HU
        if k == k0:
            pixels[j0 - 1 : j0 + 2, i0 - 1 : i0 + 2] = 4024  # 3000 HU
        ds.PixelData = pixels.tobytes()

    files = _rewrite(series, tmp_path, tilt, landmark)
    ds = next(d for d in map(pydicom.dcmread, files) if d.pixel_array.max() > 2000)
    row, col = _iop_axes(ds)
    expected = _position(ds) + i0 * 0.7 * row + j0 * 0.7 * col

    image = read_series(files)
    values = sitk.GetArrayFromImage(image)
    weight = np.clip(values - 1.0, 0.0, None)  # 0 HU background and -1000 padding weigh 0
    assert weight.sum() > 0
    centroid = (_world(image) * weight[..., None]).sum(axis=(0, 1, 2)) / weight.sum()
    np.testing.assert_allclose(centroid, expected, atol=0.1)


def test_non_uniform_spacing_is_resampled_to_the_median_gap(
    series: list[Path], tmp_path: Path
) -> None:
    jitter = [0.0, 0.3, -0.2, 0.1, 0.0, 0.25, -0.3, 0.0, 0.2, -0.1, 0.0, 0.15]

    def uneven(ds: Dataset, k: int) -> None:
        _set_position(ds, _position(ds) + np.array([0.0, 0.0, jitter[k]]))

    files = _rewrite(series, tmp_path, uneven, _linear_field)
    z = np.sort([_position(pydicom.dcmread(f))[2] for f in files])
    median = float(np.median(np.diff(z)))
    image, warned = read_series_with_warnings(files)
    assert len(warned) == 1 and "non-uniform slice spacing" in warned[0]
    assert image.GetSpacing() == pytest.approx((0.7, 0.7, median), abs=1e-9)
    assert image.GetSize() == (SPEC.columns, SPEC.rows, int((z[-1] - z[0]) // median) + 1)
    x, y, _ = _position(pydicom.dcmread(files[0]))  # every slice shares x and y
    assert image.GetOrigin() == pytest.approx((x, y, z[0]))
    assert _direction(image).tolist() == np.eye(3).tolist()
    _assert_affine_field(image, files, fill=-1000.0)  # no padding: the whole volume


def test_a_sheared_and_uneven_stack_is_resampled_both_ways(
    series: list[Path], tmp_path: Path
) -> None:
    jitter = [0.0, 0.3, -0.2, 0.1, 0.0, 0.25, -0.3, 0.0, 0.2, -0.1, 0.0, 0.15]

    def uneven(ds: Dataset, k: int) -> None:
        _set_position(ds, _position(ds) + np.array([0.0, 0.0, jitter[k]]))

    sheared = dict(_tilts())["sheared positions"]
    files = _rewrite(series, tmp_path, uneven, sheared, _linear_field)
    image, warned = read_series_with_warnings(files)
    assert [w.split(":")[0] for w in warned] == [
        "sheared slice stack (gantry tilt)",
        "non-uniform slice spacing",
    ]
    _assert_affine_field(image, files, fill=-1000.0)


def test_a_missing_slice_is_quarantined_not_interpolated(
    series: list[Path], tmp_path: Path
) -> None:
    files = _rewrite(series[:6] + series[7:], tmp_path)
    with pytest.raises(QuarantineError) as caught:
        read_series(files)
    assert caught.value.reason == "missing slices"
    assert caught.value.detail == "gap of 5.00 mm where 2.50 mm is expected"


def test_duplicate_positions_are_quarantined(series: list[Path], tmp_path: Path) -> None:
    files = _rewrite(series, tmp_path)
    twin = pydicom.dcmread(series[4])
    twin.SOPInstanceUID = generate_uid()
    twin.save_as(tmp_path / "twin.dcm", enforce_file_format=True)
    with pytest.raises(QuarantineError) as caught:
        read_series([*files, tmp_path / "twin.dcm"])
    assert caught.value.reason == "duplicate slice positions"
    assert caught.value.detail == "1 of 13 frames repeat a position"


# ------------------------------------------------------------------ one series, by position


def _series_files(study: SynthStudy, number: int) -> list[Path]:
    return sorted(f for f in study.files if f.parent.name == f"S{number}")


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


# --------------------------------------------------------------------------- series


@pytest.fixture(scope="module")
def two_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    """One flat folder holding both series of a study under random names, plus a README;
    and each series' SOPInstanceUIDs, by SeriesInstanceUID."""
    root = tmp_path_factory.mktemp("two")
    study = synthesize(root / "inbox", root / "labels.csv", TWO)[1]
    assert len(study.series_uids) == 2
    flat = root / "flat"
    flat.mkdir()
    truth: dict[str, set[str]] = {}
    for f in study.files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        truth.setdefault(ds.SeriesInstanceUID, set()).add(ds.SOPInstanceUID)
        (flat / f"{uuid.uuid4().hex}.dcm").write_bytes(f.read_bytes())
    (flat / "README.txt").write_text("not an image\n")
    return flat, truth


def test_a_folder_with_two_series_is_split(two_series: tuple[Path, dict[str, set[str]]]) -> None:
    flat, truth = two_series
    split = split_series(sorted(flat.iterdir()))
    assert set(split) == set(truth)
    for uid, files in split.items():
        sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
        assert sops == truth[uid]
        assert read_series(files).GetSize() == (TWO.columns, TWO.rows, TWO.slices)
    with pytest.raises(QuarantineError) as caught:
        read_series([f for f in flat.iterdir() if f.suffix == ".dcm"])
    assert caught.value.reason == "several series"


def test_inconsistent_series_are_refused_naming_what_differs(
    series: list[Path], tmp_path: Path
) -> None:
    def turned(ds: Dataset, k: int) -> None:
        if k == 3:
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "0.8", "0.6"]

    files = _rewrite(series, tmp_path / "turned", turned)
    for call, unit in ((split_series, "file"), (read_series, "frame")):
        with pytest.raises(QuarantineError) as caught:
            call(files)
        assert caught.value.reason == "inconsistent series"
        assert caught.value.detail == (
            f"ImageOrientationPatient differs: (1 0 0 0 1 0) in 11 {unit}s, "
            f"(1 0 0 0 0.8 0.6) in 1 {unit}"
        )

    def smaller(ds: Dataset, k: int) -> None:
        if k == 5:
            ds.Rows, ds.Columns = 16, 16
            ds.PixelData = np.zeros((16, 16), np.uint16).tobytes()

    files = _rewrite(series, tmp_path / "smaller", smaller)
    with pytest.raises(QuarantineError) as caught:
        split_series(files)
    assert caught.value.reason == "inconsistent series"
    assert caught.value.detail == "Rows x Columns differs: (24 20) in 11 files, (16 16) in 1 file"


# --------------------------------------------------------------------------- multi-frame


@dataclass(frozen=True)
class _Truth:
    values: npt.NDArray[np.float32]  # (z, y, x) real values, sorted along the normal
    origin: tuple[float, ...]
    direction: Array
    size: tuple[int, int, int]


def _enhanced_ct(path: Path, *, compress: bool = False, order_seed: int = 3) -> _Truth:
    """An enhanced CT file (per-frame functional groups) of 7 oblique frames stored in a
    shuffled order, each with its own rescale; returns what reading it must give."""
    rows, columns, frames = 6, 5, 7
    rot = _rotation((0.3, -1.0, 0.5), 40.0)
    iop = [_ds(v) for v in (*rot[:, 0], *rot[:, 1])]
    row, col = np.array([float(v) for v in iop[:3]]), np.array([float(v) for v in iop[3:]])
    normal = np.cross(row, col)
    start = np.array([-12.5, 40.25, 7.0])
    positions = [[_ds(v) for v in start + k * 1.5 * normal] for k in range(frames)]
    slopes = [1.0 + (k % 2) for k in range(frames)]
    intercepts = [-1024.0 + 10 * k for k in range(frames)]
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, (frames, rows, columns)).astype(np.uint16)
    order = list(range(frames))
    random.Random(order_seed).shuffle(order)  # file frame f holds slice order[f]
    assert order != sorted(order)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.SeriesNumber = "CT", 3
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = iop
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = ["0.8", "0.6"]  # between rows, columns
    shared.PixelMeasuresSequence[0].SliceThickness = "1.5"
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in order:
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = positions[k]
        item.PixelValueTransformationSequence = [Dataset()]
        transform = item.PixelValueTransformationSequence[0]
        transform.RescaleSlope, transform.RescaleIntercept = _ds(slopes[k]), _ds(intercepts[k])
        transform.RescaleType = "HU"
        item.FrameContentSequence = [Dataset()]
        item.FrameContentSequence[0].InStackPositionNumber = k + 1
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = stored[order].tobytes()
    if compress:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    expected = stored * np.array(slopes)[:, None, None] + np.array(intercepts)[:, None, None]
    return _Truth(
        values=expected.astype(np.float32),
        origin=tuple(float(v) for v in positions[0]),
        direction=np.column_stack([row, col, normal]),
        size=(columns, rows, frames),
    )


@pytest.mark.parametrize("compress", [False, True], ids=["native", "RLE"])
def test_enhanced_multiframe_ct_geometry_and_values(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "enhanced.dcm"
    truth = _enhanced_ct(path, compress=compress)
    image, warned = read_series_with_warnings([path])
    assert warned == []
    assert image.GetSize() == truth.size
    assert image.GetOrigin() == truth.origin
    assert image.GetSpacing() == pytest.approx((0.6, 0.8, 1.5), abs=1e-6)
    np.testing.assert_allclose(_direction(image), truth.direction, atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), truth.values)


def test_enhanced_multiframe_with_two_phases_or_turned_frames_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "enhanced.dcm"
    _enhanced_ct(path)
    ds = pydicom.dcmread(path)
    items = ds.PerFrameFunctionalGroupsSequence
    items[1].PlanePositionSequence = items[0].PlanePositionSequence  # a second phase
    ds.save_as(tmp_path / "phases.dcm", enforce_file_format=True)
    with pytest.raises(QuarantineError) as caught:
        read_series([tmp_path / "phases.dcm"])
    assert caught.value.reason == "duplicate slice positions"

    ds = pydicom.dcmread(path)
    turned = Dataset()
    turned.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PerFrameFunctionalGroupsSequence[2].PlaneOrientationSequence = [turned]
    ds.save_as(tmp_path / "turned.dcm", enforce_file_format=True)
    with pytest.raises(QuarantineError) as caught:
        read_series([tmp_path / "turned.dcm"])
    assert caught.value.reason == "inconsistent series"
    assert caught.value.detail.endswith("(1 0 0 0 1 0) in 1 frame")


def test_pydicom_multiframe_files() -> None:
    # RT dose: legacy multi-frame placed by GridFrameOffsetVector, scaled by DoseGridScaling.
    path = PYDICOM_FILES / "rtdose.dcm"
    ds = pydicom.dcmread(path)
    image = read_series([path])
    assert image.GetSize() == (ds.Columns, ds.Rows, ds.NumberOfFrames)
    assert image.GetOrigin() == tuple(float(v) for v in ds.ImagePositionPatient)
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    assert image.GetSpacing()[2] == pytest.approx(offsets[1] - offsets[0])
    expected = (ds.pixel_array * float(ds.DoseGridScaling)).astype(np.float32)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)
    # A segmentation whose per-frame groups outnumber its frames (pydicom trimmed it).
    with pytest.raises(QuarantineError) as caught:
        read_series([PYDICOM_FILES / "liver_1frame.dcm"])
    assert caught.value.reason == "invalid header"


# --------------------------------------------------------------------------- compressed


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_lossless_compressed_files_read_like_the_uncompressed_one(name: str) -> None:
    plain = read_series([PYDICOM_FILES / "MR_small.dcm"])
    image = read_series([PYDICOM_FILES / name])
    assert image.GetSize() == plain.GetSize() == (64, 64, 1)
    assert image.GetOrigin() == plain.GetOrigin()
    assert image.GetDirection() == plain.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(plain))


def _with_geometry(source: Path, target: Path) -> Path:
    """A copy of `source` (pixel data untouched, compressed or not) with a plane's geometry."""
    ds = pydicom.dcmread(source)
    ds.ImagePositionPatient = ["-10", "20", "30"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.save_as(target)
    return target


@pytest.mark.parametrize(
    "name",
    [
        "693_J2KI.dcm",  # JPEG 2000, CT with rescale
        "J2K_pixelrep_mismatch.dcm",  # JPEG 2000 whose signedness disagrees with the header
        "JPEG2000.dcm",  # JPEG 2000, NM, no geometry of its own
        "JPGExtended.dcm",  # JPEG extended (12-bit)
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "MR_small_RLE.dcm",
    ],
)
def test_compressed_files_read_to_pydicoms_pixel_values(name: str, tmp_path: Path) -> None:
    path = PYDICOM_FILES / name
    ds = pydicom.dcmread(path)
    if "ImagePositionPatient" not in ds:
        path = _with_geometry(path, tmp_path / name)
    image = read_series([path])
    assert image.GetSize() == (ds.Columns, ds.Rows, 1)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    expected = (ds.pixel_array.astype(np.float64) * slope + intercept).astype(np.float32)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0], expected)


def test_every_pydicom_test_file_is_read_or_refused_with_a_reason() -> None:
    """No file makes the reader crash: it reads, or it is quarantined with a clear reason."""
    files = sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file())
    assert len(files) > 100
    read, refused, unexpected = [], Counter[str](), []
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the files' deliberate defects
        for f in files:
            name = str(f.relative_to(PYDICOM_FILES))
            try:
                image = read_series([f])
            except QuarantineError as e:
                refused[e.reason] += 1
                lines.append(f"refused {name}: {e}")
                assert e.reason and len(e.reason) < 40
                continue
            except Exception as e:  # counting them is the point
                unexpected.append(f"{name}: {type(e).__name__}: {e}")
                continue
            read.append(name)
            assert image.GetPixelID() == sitk.sitkFloat32
            ds = pydicom.dcmread(f)
            if int(ds.get("NumberOfFrames") or 1) > 1:
                continue
            if "RescaleSlope" in ds:
                real = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0], real)
            try:
                gdcm = sitk.ReadImage(str(f))  # an independent reading of the same plane
            except RuntimeError:
                lines.append(f"(SimpleITK cannot read {name}; radflow does)")
                continue
            np.testing.assert_allclose(gdcm.GetOrigin(), image.GetOrigin(), atol=1e-4)
            np.testing.assert_allclose(gdcm.GetDirection(), image.GetDirection(), atol=1e-4)
            np.testing.assert_allclose(gdcm.GetSpacing()[:2], image.GetSpacing()[:2], atol=1e-4)
    print(f"\nread {len(read)}: {', '.join(read)}")
    print("refused by reason:", dict(sorted(refused.items())))
    print("\n".join(lines))
    assert unexpected == []
    assert len(read) >= 30  # the CT and MR slices, RT dose, compressed CT and MR
    assert refused["not grayscale"] >= 10  # the colour images


# --------------------------------------------------------------------------- NIfTI


def _nibabel_volumes() -> list[Path]:
    """nibabel's own NIfTI test files that it loads as 3-D or 4-D images."""
    found = []
    for name in sorted(glob.glob(str(NIBABEL_DATA / "**" / "*.nii*"), recursive=True)):
        if not name.endswith((".nii", ".nii.gz")):
            continue
        image = nib.load(name)
        if isinstance(image, nib.Nifti1Image | nib.Nifti2Image) and len(image.shape) in (3, 4):
            found.append(Path(name))
    return found


def _lps(affine: Array) -> tuple[Array, Array, Array]:
    """Spacing, origin and direction in LPS from a RAS affine, computed independently."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    direction[:2] *= -1
    origin = np.array([-affine[0, 3], -affine[1, 3], affine[2, 3]])
    return spacing, origin, direction


NIBABEL_VOLUMES = _nibabel_volumes()


def test_nibabel_has_volumes_to_test_on() -> None:
    names = {p.name for p in NIBABEL_VOLUMES}
    assert {"anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz"} <= names


@pytest.mark.parametrize("path", NIBABEL_VOLUMES, ids=[p.name for p in NIBABEL_VOLUMES])
def test_read_nifti_follows_nibabels_best_affine_in_lps(path: Path) -> None:
    reference = nib.load(path)
    spacing, origin, direction = _lps(reference.header.get_best_affine())
    image = read_nifti(path)
    shape = reference.shape
    assert image.GetSize() == shape
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(image.GetSpacing()[:3], spacing, atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin()[:3], origin, atol=1e-4)
    d = np.array(image.GetDirection()).reshape(len(shape), len(shape))
    np.testing.assert_allclose(d[:3, :3], direction, atol=1e-4)
    data = reference.get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), data.T)
    # Where SimpleITK can read the file (NIfTI-1), its own rule lands on the same geometry.
    if isinstance(reference, nib.Nifti2Image):
        return
    theirs = sitk.ReadImage(str(path))
    np.testing.assert_allclose(theirs.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(theirs.GetDirection(), image.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(theirs.GetSpacing()[:3], image.GetSpacing()[:3], atol=1e-4)


def _nifti(path: Path, sform: Array | None, qform: Array | None) -> Path:
    """A small NIfTI-1 file with the given sform and qform (None: code 0)."""
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = nib.Nifti1Image(data, None)
    image.header.set_sform(
        sform if sform is not None else np.eye(4), code=2 if sform is not None else 0
    )
    image.header.set_qform(
        qform if qform is not None else np.eye(4), code=1 if qform is not None else 0
    )
    nib.save(image, path)
    return path


def _affine(
    rot: Array, zooms: tuple[float, float, float], shift: tuple[float, float, float]
) -> Array:
    a = np.eye(4)
    a[:3, :3] = rot * np.array(zooms)
    a[:3, 3] = shift
    return a


def test_sform_wins_over_qform_and_qform_stands_in_without_it(tmp_path: Path) -> None:
    s = _affine(_rotation((0, 0, 1), 30), (0.5, 0.6, 2.0), (10.0, -20.0, 5.0))
    q = _affine(_rotation((1, 0, 0), 10), (0.5, 0.6, 2.0), (-3.0, 4.0, 1.0))
    for sform, qform, used in ((s, q, s), (None, q, q)):
        path = _nifti(tmp_path / f"{sform is None}.nii.gz", sform, qform)
        spacing, origin, direction = _lps(used)
        image = read_nifti(path)
        np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-5)
        np.testing.assert_allclose(_direction(image), direction, atol=1e-5)
        inspected = inspect_path(path)
        np.testing.assert_allclose(inspected["origin"], origin, atol=1e-5)


@pytest.mark.parametrize(
    ("affine", "reason"),
    [
        (np.full((4, 4), np.nan), "bad affine"),
        (np.diag([1.0, 0.0, 1.0, 1.0]), "bad affine"),
        (np.array([[1.0, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "sheared affine"),
    ],
    ids=["nan", "singular", "sheared"],
)
def test_bad_affines_are_quarantined(tmp_path: Path, affine: Array, reason: str) -> None:
    path = _nifti(tmp_path / "bad.nii", affine, None)
    with pytest.raises(QuarantineError) as caught:
        read_nifti(path)
    assert caught.value.reason == reason


def test_dicom_and_its_nifti_agree_on_world_coordinates(series: list[Path], tmp_path: Path) -> None:
    rot = _rotation((2.0, -1.0, 0.5), 35.0)

    def oblique(ds: Dataset, k: int) -> None:
        _set_position(ds, rot @ _position(ds) + np.array([5.0, 7.0, -9.0]))
        ds.ImageOrientationPatient = [_ds(v) for v in (*rot[:, 0], *rot[:, 1])]

    dicom = read_series(_rewrite(series, tmp_path / "dicom", oblique))
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(dicom, str(path))
    back = read_nifti(path)
    affine = nib.load(path).affine  # RAS, independent of SimpleITK's reading
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(dicom))
    for index in [(0, 0, 0), (19, 0, 0), (0, 23, 0), (0, 0, 11), (7, 13, 5), (19, 23, 11)]:
        world = np.array(dicom.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(index), world, atol=1e-4)
        ras = affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(LPS @ ras[:3], world, atol=1e-4)


# --------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("path", NIBABEL_VOLUMES, ids=[p.name for p in NIBABEL_VOLUMES])
def test_inspect_nifti_agrees_with_nibabel(path: Path) -> None:
    reference = nib.load(path)
    spacing, origin, direction = _lps(reference.header.get_best_affine())
    d = inspect_path(path)
    assert d["modality"] == "NIfTI"
    assert d["size"] == list(reference.shape[:3])
    assert d["frames"] == (reference.shape[3] if len(reference.shape) == 4 else 1)
    np.testing.assert_allclose(d["spacing"], spacing, atol=1e-4)
    np.testing.assert_allclose(d["origin"], origin, atol=1e-4)
    np.testing.assert_allclose(d["direction"], direction.ravel(), atol=1e-4)
    assert json.loads(json.dumps(d)) == d
    assert "spacing" in format_inspection(d)


def test_inspect_matches_what_reading_gives(series: list[Path], tmp_path: Path) -> None:
    tilt = dict(_tilts())["tilted planes"]
    files = _rewrite(series, tmp_path / "tilted", tilt)
    image, warned = read_series_with_warnings(files)
    d = inspect_path(tmp_path / "tilted")
    assert d["kind"] == "DICOM series" and d["modality"] == "CT"
    assert (d["files"], d["frames"], d["skipped_files"]) == (12, 12, 0)
    assert d["size"] == list(image.GetSize())
    np.testing.assert_allclose(d["spacing"], image.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(d["origin"], image.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(d["direction"], image.GetDirection(), atol=1e-12)
    assert d["warnings"] == warned
    text = format_inspection(d)
    assert "warning    sheared slice stack" in text
    assert f"size       {' x '.join(map(str, image.GetSize()))} voxels" in text

    single = inspect_path(files[0])
    assert single["kind"] == "DICOM file" and single["size"] == [SPEC.columns, SPEC.rows, 1]


def test_inspect_a_folder_of_two_series(two_series: tuple[Path, dict[str, set[str]]]) -> None:
    flat, truth = two_series
    d = inspect_path(flat)
    assert d["skipped_files"] == 1  # the README
    entries = d["series"]
    assert [e["series_number"] for e in entries] == [1, 2]
    assert all(e["size"] == [TWO.columns, TWO.rows, TWO.slices] for e in entries)
    text = format_inspection(d)
    assert text.startswith("2 series\n[1] DICOM series: CT, 8 files, 8 frames, series number 1\n")
    assert "\n[2] DICOM series: CT, 8 files, 8 frames, series number 2\n" in text
    for uid in truth:  # nothing that identifies the study leaves the inspection
        assert uid not in text and uid not in json.dumps(d)
    assert str(flat) not in text


def test_read_image_takes_pyradiomics_real_nrrd_case_with_its_geometry() -> None:
    from support.realdata import pyradiomics_case

    from radflow.imaging.nifti import read_image

    image_path, _ = pyradiomics_case("lung1")
    expected = sitk.ReadImage(str(image_path))
    image = read_image(image_path)
    assert image.GetSize() == expected.GetSize()
    assert image.GetSpacing() == expected.GetSpacing()
    assert image.GetOrigin() == expected.GetOrigin()
    assert image.GetDirection() == expected.GetDirection()
    assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(expected))


def test_read_image_of_a_file_that_is_no_image_says_so(tmp_path: Path) -> None:
    from radflow.imaging.nifti import read_image

    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    with pytest.raises(QuarantineError) as caught:
        read_image(path)
    assert caught.value.reason == "no image"


def _nrrd(path: Path, sizes: str, pixel_bytes: bytes) -> Path:
    header = (
        f"NRRD0004\ntype: short\ndimension: 3\nsizes: {sizes}\nencoding: raw\nendian: little\n\n"
    )
    path.write_bytes(header.encode() + pixel_bytes)
    return path


def test_an_nrrd_declaring_too_many_voxels_is_refused_by_its_header(tmp_path: Path) -> None:
    from radflow.imaging.nifti import read_image, read_itk_file

    path = _nrrd(tmp_path / "forged.nrrd", "100 100 100", b"")  # 10^6 declared, no voxels
    with pytest.raises(QuarantineError) as caught:
        read_itk_file(path, max_voxels=999_999)
    assert caught.value.reason == "declared pixel data too large"
    assert caught.value.detail.startswith("1000000 voxels declared, the limit is 999999")
    with pytest.raises(QuarantineError) as caught:  # within the limit: its voxels are missing
        read_image(path)
    assert caught.value.reason == "unreadable image"
    assert str(tmp_path) not in str(caught.value)


def test_a_small_nrrd_reads_with_its_voxels(tmp_path: Path) -> None:
    from radflow.imaging.nifti import read_itk_file

    voxels = np.arange(24, dtype="<i2").reshape(4, 3, 2)  # (z, y, x)
    image = read_itk_file(_nrrd(tmp_path / "small.nrrd", "2 3 4", voxels.tobytes()), 24)
    assert image.GetSize() == (2, 3, 4)
    assert np.array_equal(sitk.GetArrayViewFromImage(image), voxels)
