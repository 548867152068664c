"""The one-parse reader gives the bits of pydicom's own decode and today's arithmetic.

Each series is written here with pixel values over the whole range of its type (so the bits
above Bits Stored are set too), and the expected volume is computed without the reader:
pydicom's `pixel_array` of each file, then float64 `stored * slope + intercept` cast to
float32. Uncompressed plain files must be read without pydicom's decoder at all; anything
unusual must go through it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

import radflow.imaging.read as read_module
from radflow.errors import QuarantineError
from radflow.imaging.read import read_series
from radflow.synth_ct import write_ct_slices

ROWS, COLUMNS, SLICES = 48, 40, 5  # JPEG 2000's 6 resolutions need 32 pixels
PATIENT = "FASTPATH^PATIENT"


def _series(
    folder: Path,
    dtype: type[np.integer[Any]] = np.int16,
    *,
    bits_stored: int | None = None,
    slope: str = "1",
    intercept: str = "-1024",
    syntax: str = ExplicitVRLittleEndian,
    photometric: str = "MONOCHROME2",
    change: Callable[[Dataset], None] | None = None,
    seed: int = 0,
) -> list[Path]:
    """SLICES axial slices 2.5 mm apart, lowest first, values over the whole of `dtype`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    series = generate_uid()
    bits = info.bits
    paths = []
    for k in range(SLICES):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = PATIENT, "FAST-0001"
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "CT", series, 1
        ds.ImagePositionPatient = ["-7", "-8.5", f"{2.5 * k:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["0.7", "0.7"]
        ds.Rows, ds.Columns, ds.SamplesPerPixel = ROWS, COLUMNS, 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
        ds.HighBit = (bits_stored or bits) - 1
        ds.PixelRepresentation = int(info.min < 0)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = rng.integers(info.min, info.max, (ROWS, COLUMNS), dtype=dtype, endpoint=True)
        ds.PixelData = stored.tobytes()
        if syntax in (RLELossless, JPEG2000Lossless):
            if bits_stored is not None:  # an encoder takes only the stored bits
                ds.PixelData = (stored & ((1 << bits_stored) - 1)).astype(dtype).tobytes()
            ds.compress(syntax, generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
        if change is not None:
            change(ds)
        path = folder / f"IM{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _expected(paths: list[Path]) -> npt.NDArray[np.float32]:
    """pydicom's own decode of each file and the reader's arithmetic, without the reader."""
    planes = []
    for path in paths:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        planes.append((stored.astype(np.float64) * slope + intercept).astype(np.float32))
    return np.stack(planes)


def _read(paths: list[Path]) -> npt.NDArray[np.float32]:
    image = read_series(list(reversed(paths)))  # the headers, not the order, place slices
    volume: npt.NDArray[np.float32] = sitk.GetArrayFromImage(image)
    return volume


@pytest.fixture
def pydicom_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the reader asks pydicom to decode (it still decodes them)."""
    calls: list[Path] = []
    original = read_module.pixel_array

    def spy(ds: Dataset, **kwargs: Any) -> Any:
        calls.append(Path(ds.filename))
        return original(ds, **kwargs)

    monkeypatch.setattr(read_module, "pixel_array", spy)
    return calls


@pytest.mark.parametrize(
    ("dtype", "bits_stored", "slope", "intercept", "syntax"),
    [
        (np.int16, None, "1", "-1024", ExplicitVRLittleEndian),  # CT as scanners write it
        (np.uint16, None, "1", "0", ImplicitVRLittleEndian),
        (np.int16, None, "2.5", "-1000.5", ImplicitVRLittleEndian),
        (np.uint16, None, "0.000123", "7.25", ExplicitVRLittleEndian),
        (np.int16, 12, "1", "-1024", ExplicitVRLittleEndian),  # sign extended from bit 11
        (np.uint16, 12, "0.3", "7", ImplicitVRLittleEndian),  # bits above bit 11 cleared
        (np.int16, 12, "1.5", "-3.25", ExplicitVRLittleEndian),
        (np.uint8, None, "1", "-128", ExplicitVRLittleEndian),
        (np.int8, 5, "3", "1", ImplicitVRLittleEndian),
        (np.int16, None, "1", "-16711680", ExplicitVRLittleEndian),  # the float32 add's limit
        (np.int16, None, "1", "-16711681", ExplicitVRLittleEndian),  # beyond it: float64
    ],
)
def test_uncompressed_series_are_read_without_pydicom_and_bit_identical(
    tmp_path: Path,
    pydicom_decodes: list[Path],
    dtype: type[np.integer[Any]],
    bits_stored: int | None,
    slope: str,
    intercept: str,
    syntax: str,
) -> None:
    paths = _series(tmp_path / "s", dtype, bits_stored=bits_stored, slope=slope,
                    intercept=intercept, syntax=syntax)  # fmt: skip
    volume = _read(paths)
    assert pydicom_decodes == []
    expected = _expected(paths)
    assert volume.shape == (SLICES, ROWS, COLUMNS)
    assert volume.tobytes() == expected.tobytes()


def test_a_scanners_slices_with_padding_after_the_pixels_are_read_directly(
    tmp_path: Path, pydicom_decodes: list[Path]
) -> None:
    """The synthetic scanner slices carry a long private header and Data Set Trailing
    Padding after Pixel Data: the header pass still finds the pixels."""
    paths = write_ct_slices(tmp_path / "ct", 4, size=32)
    volume = _read(paths)
    assert pydicom_decodes == []
    order = sorted(paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    assert volume.tobytes() == _expected(order).tobytes()


def _monochrome1(ds: Dataset) -> None:
    ds.PhotometricInterpretation = "MONOCHROME1"


def _padded(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData + b"\0\0"  # excess padding pydicom strips


def _one_frame(ds: Dataset) -> None:
    ds.NumberOfFrames = 1


def _float_pixels(ds: Dataset) -> None:
    del ds.PixelData
    ds.FloatPixelData = np.linspace(-5, 5, ROWS * COLUMNS, dtype=np.float32).tobytes()
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")
@pytest.mark.parametrize("change", [_monochrome1, _padded, _one_frame, _float_pixels])
def test_anything_unusual_is_decoded_by_pydicom_as_before(
    tmp_path: Path, pydicom_decodes: list[Path], change: Callable[[Dataset], None]
) -> None:
    paths = _series(tmp_path / "s", slope="1.5", intercept="-2", change=change)
    volume = _read(paths)
    assert sorted(pydicom_decodes) == sorted(paths)
    assert volume.tobytes() == _expected(paths).tobytes()


@pytest.mark.parametrize(
    ("syntax", "dtype", "bits_stored"),
    [(RLELossless, np.int16, None), (JPEG2000Lossless, np.int16, None),
     (JPEG2000Lossless, np.uint16, 12), (RLELossless, np.uint16, 12)],
)  # fmt: skip
def test_compressed_series_are_bit_identical_to_pydicoms_decode(
    tmp_path: Path,
    pydicom_decodes: list[Path],
    syntax: str,
    dtype: type[np.integer[Any]],
    bits_stored: int | None,
) -> None:
    paths = _series(tmp_path / "s", dtype, bits_stored=bits_stored, slope="1.25",
                    intercept="-1024", syntax=syntax)  # fmt: skip
    volume = _read(paths)
    assert sorted(pydicom_decodes) == sorted(paths)  # in this process: a small series
    assert volume.tobytes() == _expected(paths).tobytes()


class _PoolStarted(Exception):
    pass


@pytest.mark.parametrize(
    ("syntax", "slices", "pooled"),
    [(JPEG2000Lossless, SLICES, False), (RLELossless, 64, False), (JPEG2000Lossless, 64, True)],
)
def test_worker_processes_are_started_only_for_a_large_jpeg_2000_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syntax: str, slices: int, pooled: bool
) -> None:
    """Starting workers costs seconds: worth it for POOL_MIN_FRAMES JPEG 2000 frames (tens of
    ms each), not for a few, nor for RLE (about a millisecond a frame)."""

    def pool(frames: object, workers: int) -> None:
        raise _PoolStarted(workers)

    monkeypatch.setattr(read_module, "_Pool", pool)
    monkeypatch.setattr(read_module, "_cpus", lambda: 2)
    monkeypatch.setattr(sys.modules[__name__], "SLICES", slices)
    paths = _series(tmp_path / "s", syntax=syntax)
    assert read_module.POOL_MIN_FRAMES == 64  # the cases lie on either side of it
    if pooled:
        with pytest.raises(_PoolStarted, match="2"):
            read_series(paths)
    else:
        assert _read(paths).tobytes() == _expected(paths).tobytes()


def test_a_file_cut_short_is_quarantined_without_its_values(tmp_path: Path) -> None:
    """The header pass sees the file too short for its pixels and leaves it to pydicom,
    whose refusal names the syntax and the error's type, never an element's value."""
    paths = _series(tmp_path / "s")
    paths[2].write_bytes(paths[2].read_bytes()[:-100])
    with pytest.raises(QuarantineError) as info:
        read_series(paths)
    assert info.value.reason == "undecodable pixel data"
    assert PATIENT not in str(info.value) and "FAST-0001" not in str(info.value)


def test_an_unknown_transfer_syntax_is_quarantined_as_before(tmp_path: Path) -> None:
    paths = _series(tmp_path / "s")
    for path in paths:  # explicit VR little endian bytes under a private syntax's name
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.99.1"
        ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
    with pytest.raises(QuarantineError) as info:
        read_series(paths)
    assert info.value.reason == "undecodable pixel data"
    assert info.value.detail.endswith("NotImplementedError")


def test_a_stacks_image_is_allocated_while_its_headers_are_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SimpleITK zero-fills a new image without the GIL: allocated on a thread during the
    header pass, it is the image the slices are written into, with the same bytes."""
    paths = _series(tmp_path / "s")
    given: list[tuple[int, ...] | None] = []
    fill = read_module._fill

    def spy(plan: Any, workers: int = 0, image: sitk.Image | None = None) -> sitk.Image:
        given.append(None if image is None else image.GetSize())
        return fill(plan, workers, image)

    monkeypatch.setattr(read_module, "_fill", spy)
    assert _read(paths).tobytes() == _expected(paths).tobytes()
    assert given == [(COLUMNS, ROWS, SLICES)]


def test_nothing_is_allocated_ahead_beyond_the_voxel_limit_or_for_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[tuple[int, int, int]] = []
    monkeypatch.setattr(read_module._Allocation, "_allocate", lambda self, size: sizes.append(size))
    paths = _series(tmp_path / "s")
    with pytest.raises(QuarantineError, match="too large"):
        read_series(paths, max_voxels=ROWS * COLUMNS * SLICES - 1)
    assert read_series(paths[:1]).GetSize() == (COLUMNS, ROWS, 1)
    assert sizes == []
    read_series(paths)
    assert sizes == [(COLUMNS, ROWS, SLICES)]
