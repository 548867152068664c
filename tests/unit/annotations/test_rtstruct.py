"""RTSTRUCT contours rasterised onto a series' grid: pydicom's real rtstruct.dcm, and the
fill (scikit-image's polygon2mask) checked against an independent rasterisation,
matplotlib's point-in-polygon test at the voxel centres in patient millimetres."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as PolygonPath
from pydicom.dataset import Dataset
from support.annotations import CTSeries, rtstruct_ct, rtstruct_file

from radflow.annotations import annotation_kind, segments_on_grid
from radflow.annotations.rtstruct import contours_mask
from radflow.errors import QuarantineError
from radflow.imaging.read import read_series


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[CTSeries, sitk.Image]:
    ct = rtstruct_ct(tmp_path_factory.mktemp("rt"))
    return ct, read_series(list(ct.files))


def _rtstruct() -> Dataset:
    return pydicom.dcmread(rtstruct_file(), force=True)


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path)
    return path


def _inside(values: np.ndarray, low: float, high: float) -> int:
    return int(np.count_nonzero((values > low) & (values < high)))


def test_rtstruct_dcm_fills_its_rectangles_voxel_for_voxel(
    planned: tuple[CTSeries, sitk.Image],
) -> None:
    _, reference = planned
    assert annotation_kind(rtstruct_file()) == "rtstruct"
    segments = segments_on_grid(rtstruct_file(), reference)
    # ROIs 2 and 3 are isocentre POINTs: no region, so no segment.
    assert [(s.number, s.label, s.code) for s in segments] == [(1, "patient", None)]
    mask = sitk.GetArrayFromImage(segments[0].mask)
    # Independently: each contour is an axis-aligned rectangle; count the voxel centres
    # strictly inside its extent, slice by slice (no centre lies on an edge on this grid).
    centres_x = reference.GetOrigin()[0] + np.arange(reference.GetSize()[0])
    centres_y = reference.GetOrigin()[1] + np.arange(reference.GetSize()[1])
    expected = [0] * reference.GetSize()[2]
    for contour in _rtstruct().ROIContourSequence[0].ContourSequence:
        points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
        k = round((points[0, 2] - reference.GetOrigin()[2]) / reference.GetSpacing()[2])
        expected[k] = _inside(centres_x, points[:, 0].min(), points[:, 0].max()) * _inside(
            centres_y, points[:, 1].min(), points[:, 1].max()
        )
    assert expected == [0, 120000, 120000, 120000, 0]
    assert [int(n) for n in mask.sum(axis=(1, 2))] == expected


def _distance_to_edges(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Each point's distance to the polygon's boundary (all in mm)."""
    best = np.full(len(points), np.inf)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (a + np.outer(t, ab)), axis=1))
    return best


def test_the_fill_agrees_with_an_independent_rasterisation_except_on_the_boundary() -> None:
    """scikit-image and matplotlib may disagree only about a voxel whose centre lies on the
    polygon's boundary (bound: within 1e-6 mm of an edge). Polygons with arbitrary vertices
    agree exactly; those with vertices on voxel centres put centres on edges on purpose."""
    reference = sitk.Image(60, 50, 1, sitk.sitkUInt8)
    reference.SetSpacing((0.8, 0.6, 2.0))
    reference.SetOrigin((-20.3, 11.1, 7.0))
    nx, ny, _ = reference.GetSize()
    jj, ii = np.mgrid[0:ny, 0:nx]
    centres = np.column_stack([-20.3 + 0.8 * ii.ravel(), 11.1 + 0.6 * jj.ravel()])  # (x, y) in mm
    rng = np.random.default_rng(14)
    disagreements = {"free": 0, "on centres": 0}
    for trial in range(120):
        n = int(rng.integers(3, 24))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(2.0, 15.0, n)
        polygon = np.column_stack([3.5 + radii * np.cos(angles), 26.0 + radii * np.sin(angles)])
        kind = "on centres" if trial % 2 else "free"
        if kind == "on centres":  # snap vertices to voxel centres
            polygon[:, 0] = -20.3 + 0.8 * np.round((polygon[:, 0] + 20.3) / 0.8)
            polygon[:, 1] = 11.1 + 0.6 * np.round((polygon[:, 1] - 11.1) / 0.6)
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.ContourData = [f"{v:.10g}" for p in polygon for v in (p[0], p[1], 7.0)]
        ours = contours_mask([contour], reference, 0.5)[0].astype(bool).ravel()
        theirs = PolygonPath(polygon).contains_points(centres)
        differ = ours != theirs
        disagreements[kind] += int(differ.sum())
        if differ.any():
            assert _distance_to_edges(centres[differ], polygon).max() < 1e-6
    assert disagreements["free"] == 0
    assert disagreements["on centres"] > 0  # the boundary case was exercised


def test_a_contour_inside_another_on_one_slice_is_a_hole(
    planned: tuple[CTSeries, sitk.Image], tmp_path: Path
) -> None:
    _, reference = planned
    ds = _rtstruct()
    contours = ds.ROIContourSequence[0].ContourSequence
    hole = copy.deepcopy(contours[0])  # z = -200, x -200..200, y -150..150
    square = (-50, -50, -200, 50, -50, -200, 50, 50, -200, -50, 50, -200)
    hole.ContourData = [f"{v}" for v in square]
    contours.append(hole)
    (segment,) = segments_on_grid(_save(ds, tmp_path / "ring.dcm"), reference)
    per_slice = sitk.GetArrayFromImage(segment.mask).sum(axis=(1, 2))
    assert int(per_slice[1]) == 120000 - 100 * 100


def test_an_roi_identification_code_becomes_the_segment_code(
    planned: tuple[CTSeries, sitk.Image], tmp_path: Path
) -> None:
    _, reference = planned
    ds = _rtstruct()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "38266002", "SCT", "Body"
    ds.RTROIObservationsSequence[0].RTROIIdentificationCodeSequence = [code]
    (segment,) = segments_on_grid(_save(ds, tmp_path / "coded.dcm"), reference)
    assert segment.code == "SCT:38266002"


@pytest.mark.parametrize(
    ("z_shift", "reason", "detail"),
    [
        (2.0, "RTSTRUCT contour is off the series' slices", "by 2.00 mm (tolerance 0.5 mm)"),
        (-0.6, "RTSTRUCT contour is off the series' slices", "by 0.60 mm (tolerance 0.5 mm)"),
        (40.0, "RTSTRUCT contour lies outside the series", "30.00 mm beyond its slices"),
    ],
)
def test_contours_off_the_slices_are_quarantined_with_the_offset(
    planned: tuple[CTSeries, sitk.Image], z_shift: float, reason: str, detail: str
) -> None:
    _, reference = planned
    moved = sitk.Image(reference)
    x, y, z = reference.GetOrigin()
    moved.SetOrigin((x, y, z + z_shift))
    with pytest.raises(QuarantineError) as caught:
        segments_on_grid(rtstruct_file(), moved)
    assert (caught.value.reason, caught.value.detail) == (reason, detail)


def test_a_contour_that_is_not_planar_is_quarantined(
    planned: tuple[CTSeries, sitk.Image], tmp_path: Path
) -> None:
    _, reference = planned
    ds = _rtstruct()
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    values = [float(v) for v in contour.ContourData]
    values[2] = -199.0  # first point 1 mm above the others' plane
    contour.ContourData = [f"{v}" for v in values]
    with pytest.raises(QuarantineError) as caught:
        segments_on_grid(_save(ds, tmp_path / "bent.dcm"), reference)
    assert caught.value.reason == "RTSTRUCT contour is off the series' slices"
    assert caught.value.detail == "by 1.00 mm (tolerance 0.5 mm)"
