"""Key images for reports: orthogonal slices through the lesion with its outline."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CT_LEVEL = 40.0
CT_WIDTH = 400.0  # soft-tissue window: lesions stand out, bone and air saturate


def display_window(volume: np.ndarray, modality: str) -> tuple[float, float]:
    """The grey scale of key images: CT's soft-tissue window in HU; for MR and anything else
    without an absolute scale, the volume's own 1st..99th percentile."""
    if modality == "CT":
        return CT_LEVEL - CT_WIDTH / 2, CT_LEVEL + CT_WIDTH / 2
    low, high = (float(v) for v in np.percentile(volume, [1, 99]))
    return low, high if high > low else low + 1.0


def key_image_png(image: sitk.Image, mask: sitk.Image, modality: str = "CT") -> bytes:
    """Axial, coronal and sagittal slices through the mask's centroid, as deterministic PNG bytes.

    Slices are shown in array orientation with pixels scaled by the voxel spacing, superior up in
    the coronal and sagittal views; the mask outline is drawn in red; the grey scale is the
    modality's (`display_window`).
    """
    if image.GetDimension() != 3 or image.GetSize() != mask.GetSize():
        raise ValueError(
            f"need a 3-D image and mask of one size: {image.GetSize()} vs {mask.GetSize()}"
        )
    volume = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x)
    inside = sitk.GetArrayFromImage(mask) != 0
    if not inside.any():
        raise ValueError("mask is empty: no voxel is non-zero")
    k, j, i = np.rint(np.argwhere(inside).mean(axis=0)).astype(int)
    sx, sy, sz = image.GetSpacing()
    panels: tuple[tuple[str, np.ndarray, np.ndarray, float, Literal["upper", "lower"]], ...] = (
        # (title, image slice, mask slice, height/width of a pixel, where row 0 goes)
        ("axial", volume[k], inside[k], sy / sx, "upper"),
        ("coronal", volume[:, j, :], inside[:, j, :], sz / sx, "lower"),
        ("sagittal", volume[:, :, i], inside[:, :, i], sz / sy, "lower"),
    )
    fig = Figure(figsize=(9, 3), dpi=80, facecolor="black")
    FigureCanvasAgg(fig)
    low, high = display_window(volume, modality)
    for n, (title, pixels, region, aspect, origin) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 3, n)
        ax.imshow(
            pixels,
            cmap="gray",
            vmin=low,
            vmax=high,
            aspect=aspect,
            origin=origin,
            interpolation="nearest",
        )
        if region.any():
            # contour's default origin puts Z[0, 0] at (0, 0), matching imshow's pixel centres
            ax.contour(region.astype(np.uint8), levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(title, color="white", fontsize=9)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor=fig.get_facecolor(), metadata={"Software": None})
    return buffer.getvalue()
