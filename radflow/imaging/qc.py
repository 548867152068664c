"""Registration QC images for reports: is the secondary where the primary is?

A checkerboard alternates blocks of the two images, so a misregistration shows as edges that
break at block borders; an overlay puts the fixed image in magenta and the moving one in
green, so aligned anatomy is grey and misaligned anatomy is coloured. Three orthogonal
slices through the volume centre, in radiological display (patient left on screen right).
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from matplotlib.figure import Figure

Style = Literal["checkerboard", "overlay"]
Array = npt.NDArray[np.float32]


def _unit(image: sitk.Image, lo: float, hi: float) -> sitk.Image:
    """`image` windowed to [0, 1] as float32 (both images share one window)."""
    return sitk.IntensityWindowing(sitk.Cast(image, sitk.sitkFloat32), lo, hi, 0.0, 1.0)


def _display_window(image: sitk.Image) -> tuple[float, float]:
    """The 1st..99th percentile: a display window that ignores a few extreme voxels."""
    lo, hi = (float(v) for v in np.percentile(sitk.GetArrayViewFromImage(image), [1, 99]))
    return lo, hi if hi > lo else lo + 1.0


def _slices(volume: npt.NDArray[np.float32]) -> list[Array]:
    """Axial, coronal and sagittal slices through the centre of an LPS (z, y, x[, rgb]) array.

    Rows of the coronal and sagittal slices are flipped so superior is at the top.
    """
    nz, ny, nx = volume.shape[:3]
    return [volume[nz // 2], volume[::-1, ny // 2], volume[::-1, :, nx // 2]]


def checkerboard_png(
    fixed: sitk.Image,
    moving_resampled: sitk.Image,
    *,
    checkers: int = 8,
    window: tuple[float, float] | None = None,
    style: Style = "checkerboard",
    dpi: int = 100,
) -> bytes:
    """A PNG of `fixed` against `moving_resampled` (already on fixed's grid).

    `window` (lo, hi) sets the grey scale of both images (None: fixed's 1st..99th
    percentile). The bytes are deterministic for a given matplotlib: no timestamp or
    software tag is written.
    """
    if moving_resampled.GetSize() != fixed.GetSize():
        raise ValueError("moving_resampled must be on fixed's grid (see register.resample_onto)")
    lo, hi = window if window is not None else _display_window(fixed)
    fixed_u, moving_u = _unit(fixed, lo, hi), _unit(moving_resampled, lo, hi)
    moving_u.CopyInformation(fixed_u)  # same grid: tolerate last-bit geometry differences
    f, m = sitk.DICOMOrient(fixed_u, "LPS"), sitk.DICOMOrient(moving_u, "LPS")
    if style == "checkerboard":
        volume = sitk.GetArrayFromImage(sitk.CheckerBoard(f, m, [checkers] * 3))
    else:
        a, b = sitk.GetArrayFromImage(f), sitk.GetArrayFromImage(m)
        volume = np.stack([a, b, a], axis=-1)  # magenta fixed, green moving: grey where equal
    sx, sy, sz = f.GetSpacing()
    aspects = [sy / sx, sz / sx, sz / sy]  # row spacing / column spacing of each slice

    fig = Figure(figsize=(9.0, 3.4), dpi=dpi)
    for n, (title, plane, aspect) in enumerate(
        zip(("axial", "coronal", "sagittal"), _slices(volume), aspects, strict=True)
    ):
        ax = fig.add_subplot(1, 3, n + 1)
        ax.imshow(plane, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect=aspect)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{style}: fixed vs registered moving", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
