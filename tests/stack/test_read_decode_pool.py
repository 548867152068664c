"""Compressed frames decoded on worker processes give the volume decoded in-process, bit for
bit, and a frame a worker cannot decode is quarantined as it would be in-process."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import RLELossless

from radflow.errors import QuarantineError
from radflow.imaging.read import read_series
from radflow.synth_ct import write_ct_slices

pytestmark = pytest.mark.stack


def _rle_series(folder: Path, count: int) -> list[Path]:
    paths = write_ct_slices(folder, count, size=48)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = "1.5"  # the float64 arithmetic, not the exact float32 add
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)
    return paths


def test_worker_processes_decode_the_same_bits(tmp_path: Path) -> None:
    paths = _rle_series(tmp_path / "rle", 12)
    here = read_series(paths, decode_workers=0)
    pooled = read_series(paths, decode_workers=2)
    assert pooled.GetSize() == here.GetSize() == (48, 48, 12)
    assert pooled.GetOrigin() == here.GetOrigin()
    assert (
        sitk.GetArrayViewFromImage(pooled).tobytes() == sitk.GetArrayViewFromImage(here).tobytes()
    )


def test_a_frame_a_worker_cannot_decode_is_quarantined(tmp_path: Path) -> None:
    paths = _rle_series(tmp_path / "rle", 8)
    ds = pydicom.dcmread(paths[5])
    ds.PixelData = ds.PixelData[:40] + bytes(len(ds.PixelData) - 40)  # a broken RLE stream
    ds.save_as(paths[5], enforce_file_format=True)
    with pytest.raises(QuarantineError) as info:
        read_series(paths, decode_workers=2)
    assert info.value.reason == "undecodable pixel data"
    assert info.value.detail.startswith("RLE Lossless: ")
