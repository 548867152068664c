"""A model report's overlay: one axial slice with the annotation's and the model's outlines, so
a reader sees where the model agrees with the annotator and where it does not."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from radflow.reports.images import CT_LEVEL, CT_WIDTH

# Okabe & Ito's colour-blind-safe palette: orange and sky blue stay apart for every common
# colour-vision deficiency and both stand out on a grey CT slice.
ANNOTATION_COLOUR = "#E69F00"
MODEL_COLOUR = "#56B4E9"
OVERLAY_PX = 320  # the PNG is square, this many pixels a side; a letterboxed slice keeps its aspect
_DPI = 80


def overlay_slice(truth: np.ndarray | None, predicted: np.ndarray | None, depth: int) -> int:
    """The axial slice shown: through the truth's centre, else the prediction's, else the middle.

    The centre is the centroid's slice; when the region is not convex and misses that slice, the
    nearest slice that holds some of it.
    """
    for mask in (truth, predicted):
        if mask is None:
            continue
        per_slice = np.count_nonzero(np.asarray(mask).reshape(len(mask), -1), axis=1)
        if per_slice.any():
            centre = (np.arange(per_slice.size) * per_slice).sum() / per_slice.sum()
            slices = np.flatnonzero(per_slice)
            return int(slices[np.argmin(np.abs(slices - centre))])
    return depth // 2


def _view_centre(regions: list[np.ndarray], height: int, width: int) -> tuple[float, float]:
    """(row, column) the zoomed view centres on: the first drawn region's centroid, else the
    slice's centre."""
    for region in regions:
        if region.any():
            row, column = np.argwhere(region).mean(axis=0)
            return float(row), float(column)
    return (height - 1) / 2, (width - 1) / 2


def overlay_png(
    image_hu: np.ndarray,
    truth: np.ndarray | None,
    predicted: np.ndarray | None,
    *,
    window: tuple[float, float] = (CT_LEVEL - CT_WIDTH / 2, CT_LEVEL + CT_WIDTH / 2),
    spacing_mm: tuple[float, float, float],
    field_mm: float | None = None,
) -> bytes:
    """An `OVERLAY_PX`-square PNG (deterministic bytes) of the slice `overlay_slice` picks.

    `image_hu` and the masks are (z, y, x) arrays of one shape, `spacing_mm` is (z, y, x).
    Row 0 is at the top, pixels are scaled by the in-plane spacing, the grey scale is `window`
    (default: the soft-tissue window of the key images), the annotation is outlined in orange
    and the model's prediction in blue, with a legend naming what is drawn. `field_mm` zooms to
    a square that many millimetres wide around the annotation (else the prediction) on that
    slice, so a small lesion is not a few pixels of a whole abdomen; None shows the whole slice.
    """
    volume = np.asarray(image_hu)
    if volume.ndim != 3:
        raise ValueError(f"need a 3-D (z, y, x) image, got shape {volume.shape}")
    for mask in (truth, predicted):
        if mask is not None and np.shape(mask) != volume.shape:
            raise ValueError(f"mask shape {np.shape(mask)} differs from image {volume.shape}")
    low, high = window
    if not high > low:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    _, sy, sx = spacing_mm
    if not (sy > 0 and sx > 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    if field_mm is not None and not field_mm > 0:
        raise ValueError(f"field_mm must be positive, got {field_mm}")
    k = overlay_slice(truth, predicted, volume.shape[0])
    height, width = volume.shape[1:]
    outlines = [
        (np.asarray(mask[k]) != 0, colour, name)
        for mask, colour, name in (
            (truth, ANNOTATION_COLOUR, "annotation"),
            (predicted, MODEL_COLOUR, "model"),
        )
        if mask is not None
    ]

    fig = Figure(figsize=(OVERLAY_PX / _DPI, OVERLAY_PX / _DPI), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0), facecolor="black")
    ax.imshow(
        volume[k].astype(np.float32),
        cmap="gray",
        vmin=low,
        vmax=high,
        aspect=sy / sx,
        interpolation="nearest",
    )
    for region, colour, _ in outlines:
        if region.any():
            # The 0.5 level runs along the voxel edges, between inside and outside centres.
            ax.contour(region.astype(np.uint8), levels=[0.5], colors=colour, linewidths=1.5)
    if field_mm is None:
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
    else:
        row, column = _view_centre([region for region, _, _ in outlines], height, width)
        half_rows, half_columns = field_mm / 2 / sy, field_mm / 2 / sx
        ax.set_xlim(column - half_columns, column + half_columns)
        ax.set_ylim(row + half_rows, row - half_rows)
    ax.set_axis_off()
    for n, (_, colour, name) in enumerate(outlines):
        fig.text(
            0.02,
            0.02 + 0.07 * n,
            name,
            color=colour,
            fontsize=9,
            fontweight="bold",
            bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 1.5},
        )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="black", metadata={"Software": None})
    return buffer.getvalue()
