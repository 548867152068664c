"""Overlay PNGs: the right slice, both outlines where the masks' edges are, aspect kept, same
bytes twice; on a synthetic volume whose geometry is known and on pyradiomics' lung CT."""

from __future__ import annotations

import io

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from support.realdata import pyradiomics_case

from radflow.reports.overlays import (
    ANNOTATION_COLOUR,
    MODEL_COLOUR,
    OVERLAY_PX,
    overlay_png,
    overlay_slice,
)

SHAPE = (16, 64, 64)
SPACING = (2.0, 1.0, 1.0)
SCALE = OVERLAY_PX // SHAPE[1]  # 5 PNG pixels per voxel of a square slice
LEGEND_ROWS = slice(260, OVERLAY_PX)  # the legend's corner, left out of outline checks
LEGEND_COLUMNS = slice(0, 120)


def slice_coded_volume() -> np.ndarray:
    """Every slice one flat value, 25 HU apart, all inside the default window: the grey of a
    pixel tells which slice is shown."""
    return (-160.0 + 25.0 * np.arange(SHAPE[0], dtype=np.float32))[:, None, None] * np.ones(
        SHAPE, dtype=np.float32
    )


def square(z: tuple[int, int], y: tuple[int, int], x: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = True
    return mask


TRUTH = square((5, 10), (20, 40), (20, 40))  # centre slice 7; edges at PNG pixels 100 and 200
PREDICTED = square((7, 14), (30, 50), (30, 50))  # centre slice 10; edges at pixels 150 and 250


def decoded(png: bytes) -> np.ndarray:
    """RGB, 0..255."""
    rgba = imread(io.BytesIO(png), format="png")
    return np.rint(rgba[..., :3] * 255).astype(int)


def near(pixels: np.ndarray, colour: str, tolerance: float = 60.0) -> np.ndarray:
    target = np.array(to_rgb(colour)) * 255
    return np.linalg.norm(pixels - target, axis=-1) < tolerance


def grey_of_slice(k: int) -> int:
    """The grey the default window (-160..240 HU) and matplotlib's 256-level map give slice k."""
    level = min(int((25.0 * k) / 400.0 * 256), 255)
    return round(level / 255 * 255)


def outline_band(top: int, bottom: int, width: int = 4) -> np.ndarray:
    """PNG pixels within `width` of a square's outline running from pixel `top` to `bottom`."""
    rows, columns = np.mgrid[:OVERLAY_PX, :OVERLAY_PX]
    inside_span = (
        (rows >= top - width)
        & (rows <= bottom + width)
        & (columns >= top - width)
        & (columns <= bottom + width)
    )
    on_line = (
        (np.abs(rows - top) <= width)
        | (np.abs(rows - bottom) <= width)
        | (np.abs(columns - top) <= width)
        | (np.abs(columns - bottom) <= width)
    )
    return inside_span & on_line


def test_png_size_outlines_at_the_mask_edges_and_same_bytes_twice() -> None:
    png = overlay_png(slice_coded_volume(), TRUTH, PREDICTED, spacing_mm=SPACING)
    assert png == overlay_png(slice_coded_volume(), TRUTH, PREDICTED, spacing_mm=SPACING)
    assert b"matplotlib" not in png.lower()  # no software version in the metadata
    rgb = decoded(png)
    assert rgb.shape == (OVERLAY_PX, OVERLAY_PX, 3)
    # The truth's slice (7): flat grey where nothing is drawn.
    assert np.all(np.abs(rgb[10, 300] - grey_of_slice(7)) <= 1)
    assert np.all(rgb[120, 120] == rgb[120, 120][0])  # inside the truth: still grey
    orange, blue = near(rgb, ANNOTATION_COLOUR), near(rgb, MODEL_COLOUR)
    # The truth's left edge (voxel edge 19.5 -> pixel 100) away from the prediction's outline.
    assert orange[120:130, 97:104].any() and not orange[120:130, 110:140].any()
    # The prediction's left edge (pixel 150) below the truth.
    assert blue[220:230, 147:154].any() and not blue[220:230, 160:190].any()
    # Only the outlines (and the legend) are coloured.
    outside_legend = np.ones_like(orange)
    outside_legend[LEGEND_ROWS, LEGEND_COLUMNS] = False
    assert not (orange & outside_legend & ~outline_band(100, 200)).any()
    assert not (blue & outside_legend & ~outline_band(150, 250)).any()
    # Both names are in the legend.
    assert orange[LEGEND_ROWS, LEGEND_COLUMNS].any() and blue[LEGEND_ROWS, LEGEND_COLUMNS].any()


def test_slice_follows_truth_then_prediction_then_middle() -> None:
    assert overlay_slice(TRUTH, PREDICTED, SHAPE[0]) == 7
    assert overlay_slice(None, PREDICTED, SHAPE[0]) == 10
    assert overlay_slice(np.zeros(SHAPE, bool), PREDICTED, SHAPE[0]) == 10
    assert overlay_slice(None, None, SHAPE[0]) == 8
    # Two blobs at slices 2 and 12: the centroid (7) holds neither; the nearest one is shown.
    two = square((2, 3), (5, 9), (5, 9)) | square((12, 13), (5, 9), (5, 9))
    assert overlay_slice(two, None, SHAPE[0]) in (2, 12)
    volume = slice_coded_volume()
    for truth, predicted, k in ((None, PREDICTED, 10), (None, None, 8)):
        rgb = decoded(overlay_png(volume, truth, predicted, spacing_mm=SPACING))
        assert np.all(np.abs(rgb[10, 300] - grey_of_slice(k)) <= 1)


def test_without_prediction_only_the_annotation_is_drawn_and_named() -> None:
    rgb = decoded(overlay_png(slice_coded_volume(), TRUTH, None, spacing_mm=SPACING))
    assert near(rgb, ANNOTATION_COLOUR).any()
    assert not near(rgb, MODEL_COLOUR).any()


def test_anisotropic_pixels_keep_their_aspect() -> None:
    # Rows 2 mm apart, columns 1 mm: the 64 x 64 slice is twice as tall as wide, so it fills
    # the height and the middle half of the width, black either side.
    rgb = decoded(overlay_png(slice_coded_volume(), TRUTH, None, spacing_mm=(2.0, 2.0, 1.0)))
    middle = OVERLAY_PX // 2
    assert np.all(rgb[middle, : OVERLAY_PX // 4 - 2] == 0)
    assert np.all(rgb[middle, 3 * OVERLAY_PX // 4 + 2 :] == 0)
    assert np.all(np.abs(rgb[20, middle + 20] - grey_of_slice(7)) <= 1)


def test_field_of_view_zooms_on_the_annotation() -> None:
    # 32 mm around the truth's centre (29.5, 29.5): 10 pixels a voxel, the truth's left edge
    # (19.5) at pixel (19.5 - 13.5) * 10 = 60, its right edge at 260.
    png = overlay_png(slice_coded_volume(), TRUTH, None, spacing_mm=SPACING, field_mm=32.0)
    orange = near(decoded(png), ANNOTATION_COLOUR)
    assert orange[150:170, 57:64].any() and orange[150:170, 257:264].any()
    assert not orange[150:170, 70:250].any()


def test_bad_input_is_refused() -> None:
    volume = slice_coded_volume()
    with pytest.raises(ValueError, match="mask shape"):
        overlay_png(volume, TRUTH[:, :-1], None, spacing_mm=SPACING)
    with pytest.raises(ValueError, match="3-D"):
        overlay_png(volume[0], None, None, spacing_mm=SPACING)
    with pytest.raises(ValueError, match="window"):
        overlay_png(volume, TRUTH, None, spacing_mm=SPACING, window=(100.0, -100.0))


def test_real_lung_ct_with_its_nodule_annotation() -> None:
    image_path, label_path = pyradiomics_case("lung1")
    image, label = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
    volume = sitk.GetArrayFromImage(image)
    truth = sitk.GetArrayFromImage(label) != 0
    sx, sy, sz = label.GetSpacing()
    model = np.roll(truth, 4, axis=2)  # the same nodule, 4 columns to the right
    png = overlay_png(volume, truth, model, spacing_mm=(sz, sy, sx), field_mm=50.0)
    assert png == overlay_png(volume, truth, model, spacing_mm=(sz, sy, sx), field_mm=50.0)
    rgb = decoded(png)
    assert rgb.shape == (OVERLAY_PX, OVERLAY_PX, 3)
    outside_legend = np.ones(rgb.shape[:2], dtype=bool)
    outside_legend[LEGEND_ROWS, LEGEND_COLUMNS] = False
    orange = near(rgb, ANNOTATION_COLOUR) & outside_legend
    blue = near(rgb, MODEL_COLOUR) & outside_legend
    assert orange.any() and blue.any()
    # Shifted right by 4 columns of 0.57 mm in a 50 mm field: the model's outline is about
    # 4 * 0.57 / 50 * 320 = 15 pixels right of the annotation's.
    shift = np.argwhere(blue)[:, 1].mean() - np.argwhere(orange)[:, 1].mean()
    assert shift == pytest.approx(4 * sx / 50.0 * OVERLAY_PX, abs=4)
