"""Read a DICOM series into a SimpleITK image with LPS geometry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from radflow.errors import QuarantineError


def slice_order(files: Sequence[Path]) -> list[Path]:
    """Files sorted along the slice normal by ImagePositionPatient (never by name or number)."""
    positions = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise QuarantineError("missing geometry", "a slice lacks ImagePositionPatient")
        row, col = (
            np.array(ds.ImageOrientationPatient[:3]),
            np.array(ds.ImageOrientationPatient[3:]),
        )
        normal = np.cross(row, col)
        positions.append((float(np.dot(normal, np.array(ds.ImagePositionPatient, float))), f))
    positions.sort(key=lambda p: p[0])
    gaps = np.diff([p[0] for p in positions])
    if len(gaps) and (gaps.min() <= 1e-3 or gaps.max() - gaps.min() > 0.01 * max(gaps.max(), 1)):
        raise QuarantineError(
            "irregular slice spacing",
            f"gaps between {gaps.min():.3f} and {gaps.max():.3f} mm",
        )
    return [p[1] for p in positions]


def read_series(files: Sequence[Path]) -> sitk.Image:
    """One series as an image in Hounsfield units (rescale applied), float32."""
    if not files:
        raise QuarantineError("empty series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in slice_order(files)])
    return sitk.Cast(reader.Execute(), sitk.sitkFloat32)
