"""Reading a 512 x 512 x 600 CT series (300 MiB of pixels) in a child process whose own peak
memory is measured: at most four times the raw size."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

pytestmark = pytest.mark.stack


def _ds(x: float) -> str:
    """A DS string well within 16 characters."""
    s = f"{x:.8f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from radflow.imaging.read import read_series
    files = sorted(Path(sys.argv[1]).iterdir())
    image = read_series(files)
    assert image.GetSize() == (512, 512, 600), image.GetSize()
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child forked from a big
    # pytest process would report the parent's size (1.3 GiB late in the full suite).
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:")))
    """
)


def test_reading_512x512x600_stays_within_four_times_its_raw_size(tmp_path: Path) -> None:
    rows = columns = 512
    slices = 600
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.2", "CT"
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    plane = (np.arange(rows * columns) % 4096).astype(np.uint16).reshape(rows, columns)
    for k in range(slices):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = ["-179", "-179", _ds(1.25 * k)]
        ds.PixelData = np.roll(plane, k).tobytes()
        ds.save_as(tmp_path / f"{k:04d}.dcm", enforce_file_format=True)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = int(out.stdout.strip())
    raw = rows * columns * slices * 2  # the stored 16-bit pixels
    print(f"\npeak RSS {peak / 2**20:.0f} MiB = {peak / raw:.2f} x the raw {raw / 2**20:.0f} MiB")
    assert peak < 4 * raw
