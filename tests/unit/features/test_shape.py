"""Mesh shape features: exact values on solids whose mesh is known, and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from radflow.features.shape import SHAPE_FEATURES, max_distance, shape_features, surface_mesh


def test_one_voxel_is_an_octahedron_through_its_face_centres() -> None:
    """The mesh of one voxel joins the midpoints of its 6 edges to the outside: with spacing
    (z, y, x) = (4, 3, 2) mm an octahedron of half-axes 2, 1.5 and 1 mm."""
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    s = shape_features(one, (4.0, 3.0, 2.0))
    assert set(s) == set(SHAPE_FEATURES)
    assert s["VoxelVolume"] == 24.0
    assert s["MeshVolume"] == pytest.approx(4 / 3 * 2 * 1.5 * 1, rel=1e-12)
    # 8 faces, each with vertices (2,0,0), (0,1.5,0), (0,0,1): area |(a x b)| / 2
    a, b = np.array([-2.0, 1.5, 0.0]), np.array([-2.0, 0.0, 1.0])
    assert s["SurfaceArea"] == pytest.approx(8 * np.linalg.norm(np.cross(a, b)) / 2, rel=1e-12)
    assert s["Maximum3DDiameter"] == pytest.approx(4.0)
    assert s["Maximum2DDiameterSlice"] == pytest.approx(3.0)  # same z: the y and x vertices
    assert s["Maximum2DDiameterColumn"] == pytest.approx(4.0)  # same y: z and x vertices
    assert s["Maximum2DDiameterRow"] == pytest.approx(4.0)  # same x: z and y vertices
    assert s["MajorAxisLength"] == 0.0  # one voxel centre: no spread
    assert s["Elongation"] == 0.0 and s["Flatness"] == 0.0


def test_ball_approaches_a_sphere() -> None:
    radius = 12
    z, y, x = np.mgrid[:31, :31, :31] - 15
    ball = x**2 + y**2 + z**2 <= radius**2
    s = shape_features(ball, (1.0, 1.0, 1.0))
    assert s["MeshVolume"] == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.02)
    # a binary mask's mesh is a staircase: its area overshoots the sphere's by about 7 %
    assert 1.0 < s["SurfaceArea"] / (4 * math.pi * radius**2) < 1.1
    assert 0.9 < s["Sphericity"] <= 1.0
    # the farthest edge midpoints: 2 * radius + one voxel (half a voxel out on either side)
    assert s["Maximum3DDiameter"] == pytest.approx(2 * radius + 1, abs=0.5)
    # pyradiomics: 4 sqrt(largest eigenvalue); for a ball that eigenvalue is r^2 / 5
    assert s["MajorAxisLength"] == pytest.approx(4 * radius / math.sqrt(5), rel=0.02)
    assert s["Elongation"] == pytest.approx(1.0, abs=0.01)


def test_box_axes_follow_its_sides_and_spacing() -> None:
    box = np.zeros((6, 12, 24), bool)
    box[1:5, 2:10, 2:22] = True  # 4 x 8 x 20 voxels
    s = shape_features(box, (2.0, 2.0, 2.0))
    assert s["VoxelVolume"] == pytest.approx(4 * 8 * 20 * 8.0)
    # uniform box of side n: variance (n^2 - 1) / 12, so the ratios follow the side lengths
    assert s["Elongation"] == pytest.approx(math.sqrt(63 / 399))
    assert s["Flatness"] == pytest.approx(math.sqrt(15 / 399))
    # the corners are cut by the mesh; the diagonal runs between edge midpoints 0.5 voxel out
    assert s["Maximum2DDiameterSlice"] < 2 * math.hypot(8, 20)


def test_a_region_on_the_array_border_gets_a_closed_mesh() -> None:
    full = np.ones((3, 4, 5), bool)
    inner = np.pad(full, 2)
    assert shape_features(full, (1.0, 1.0, 1.0)) == pytest.approx(
        shape_features(inner, (1.0, 1.0, 1.0)), rel=1e-12
    )


def test_a_flat_region_has_zero_flatness() -> None:
    disc = np.zeros((5, 16, 16), bool)
    yy, xx = np.mgrid[:16, :16]
    disc[2][(yy - 6) ** 2 + (xx - 7) ** 2 <= 4] = True
    s = shape_features(disc, (1.5, 0.9, 0.9))
    assert s["Flatness"] == 0.0 and s["LeastAxisLength"] == 0.0
    assert s["Elongation"] == pytest.approx(1.0, abs=0.05)
    assert 0 < s["Sphericity"] <= 1


def test_empty_and_flat_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        shape_features(np.zeros((3, 3, 3), bool), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="3-D"):
        surface_mesh(np.ones((3, 3), bool), (1.0, 1.0, 1.0))


_spacing = st.tuples(*(st.floats(0.3, 6.0) for _ in range(3)))


@settings(max_examples=40, deadline=None)
@given(
    blob=arrays(bool, st.tuples(*(st.integers(1, 7) for _ in range(3)))).filter(np.any),
    spacing=_spacing,
)
def test_sphericity_never_exceeds_one(blob: np.ndarray, spacing: tuple[float, ...]) -> None:
    """The mesh is closed, so the isoperimetric inequality holds: any region, any spacing."""
    s = shape_features(blob, (spacing[0], spacing[1], spacing[2]))
    assert 0 < s["Sphericity"] <= 1 + 1e-12
    assert s["MeshVolume"] > 0 and s["SurfaceArea"] > 0
    for plane in ("Slice", "Column", "Row"):
        assert s[f"Maximum2DDiameter{plane}"] <= s["Maximum3DDiameter"] + 1e-9
    assert s["LeastAxisLength"] <= s["MinorAxisLength"] <= s["MajorAxisLength"]


@pytest.mark.parametrize("seed", range(6))
def test_sphericity_of_random_smooth_blobs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=(24, 24, 24)), 2.5)
    blob = field > np.quantile(field, 0.7)
    spacing = tuple(float(v) for v in rng.uniform(0.5, 3.0, 3))
    s = shape_features(blob, (spacing[0], spacing[1], spacing[2]))
    assert 0 < s["Sphericity"] <= 1


@settings(max_examples=40, deadline=None)
@given(
    points=arrays(
        np.float64,
        st.tuples(st.integers(0, 60), st.sampled_from([2, 3])),
        elements=st.integers(-20, 20).map(float),
    )
)
def test_max_distance_equals_brute_force(points: np.ndarray) -> None:
    """The convex-hull shortcut (and its fallback for degenerate point sets) is exact."""
    expected = 0.0
    if len(points) > 1:
        expected = float(np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1).max()))
    assert max_distance(points) == pytest.approx(expected, rel=1e-12)
