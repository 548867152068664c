"""Shape features of a region, from its triangle mesh, as pyradiomics defines them.

The surface is the marching-cubes mesh of the binary mask padded by one empty voxel, at the
iso-level 0.5, so every vertex lies halfway along a voxel edge that crosses the boundary and
the mesh is closed even where the region touches the image's border. scikit-image builds it
(Lewiner's marching cubes, which resolves the ambiguous cube configurations consistently, so
the surface is watertight: the signed volume is the enclosed volume and, by the
isoperimetric inequality, Sphericity cannot exceed 1). Coordinates are voxel indices times
the spacing in numpy's (z, y, x) order; the image's direction is a rotation, which changes no
area, volume or distance.

Definitions (pyradiomics' `shape` class, IBSI where it names them):

* MeshVolume: the sum over the faces of the signed volume of the tetrahedron made by the
  face and the origin; SurfaceArea: the sum of the faces' areas; VoxelVolume: voxels times
  the volume of one voxel (not used by any other feature).
* SurfaceVolumeRatio = A / V; Sphericity = (36 pi V^2)^(1/3) / A (mesh volume and area).
* Maximum3DDiameter: the largest distance between two mesh vertices; Maximum2DDiameterSlice,
  -Column and -Row: the same among vertices that share their z, y or x coordinate (the
  axial, coronal and sagittal planes of an axial image).
* Major/Minor/LeastAxisLength = 4 sqrt(lambda) of the eigenvalues of the covariance (divided
  by N) of the physical positions of the voxel centres; Elongation = sqrt(minor / major),
  Flatness = sqrt(least / major). These use the voxels, not the mesh.

Agreement with pyradiomics: vertices, hence the diameters, are the same points; the axis
lengths are the same numbers. pyradiomics triangulates each cube with its own lookup table,
and a cube whose boundary polygon is not planar (or is ambiguous) gives a slightly different
area with another table, so SurfaceArea, MeshVolume and the features built on them agree to
a fraction of a percent (see tests/unit/features/test_pyradiomics_agreement.py), not exactly.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist
from skimage.measure import marching_cubes

__all__ = ["SHAPE_FEATURES", "Mesh", "max_distance", "shape_features", "surface_mesh"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: pyradiomics' default-enabled shape features (3-D), in its documentation's order.
SHAPE_FEATURES: tuple[str, ...] = (
    "MeshVolume",
    "VoxelVolume",
    "SurfaceArea",
    "SurfaceVolumeRatio",
    "Sphericity",
    "Maximum3DDiameter",
    "Maximum2DDiameterSlice",
    "Maximum2DDiameterColumn",
    "Maximum2DDiameterRow",
    "MajorAxisLength",
    "MinorAxisLength",
    "LeastAxisLength",
    "Elongation",
    "Flatness",
)

_BLOCK_ENTRIES = 1 << 22  # distances held at once when comparing points (32 MiB)
# Up to this many points, comparing every pair is faster than building their hull first
# (Qhull's fixed cost is about 0.3 ms; a plane of a nodule's mesh has 50-150 vertices).
_ALL_PAIRS_POINTS = 300


@dataclass(frozen=True)
class Mesh:
    """A closed triangle mesh: `grid` holds each vertex in voxel-index units (z, y, x; a
    half-integer along the edge it lies on), `vertices` the same points in mm."""

    grid: FloatArray
    vertices: FloatArray
    faces: npt.NDArray[np.int64]

    def area(self) -> float:
        a, b, c = (self.vertices[self.faces[:, k]] for k in range(3))
        return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())

    def volume(self) -> float:
        """Enclosed volume (divergence theorem); the sign of the faces' orientation is dropped."""
        a, b, c = (self.vertices[self.faces[:, k]] for k in range(3))
        return float(abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)


def surface_mesh(inside: npt.ArrayLike, spacing: tuple[float, float, float]) -> Mesh:
    """The marching-cubes surface of the True voxels of a 3-D array, `spacing` in its axis
    order (z, y, x for an array from SimpleITK)."""
    mask = np.asarray(inside, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"need a 3-D mask, got {mask.ndim}-D")
    if not mask.any():
        raise ValueError("mask is empty: no voxel is non-zero")
    padded = np.pad(mask, 1).astype(np.float32)
    grid, faces, _, _ = marching_cubes(padded, 0.5, method="lewiner")
    grid = grid.astype(np.float64) - 1.0  # back to the unpadded array's indices
    vertices = grid * np.asarray(spacing, dtype=np.float64)
    return Mesh(grid=grid, vertices=vertices, faces=faces.astype(np.int64))


def max_distance(points: npt.ArrayLike) -> float:
    """The largest distance between two of `points` (n x d); 0 for fewer than two.

    The farthest pair is a pair of convex-hull vertices, so of many points only those are
    compared (Qhull); a few points, and points that span no full-dimensional hull (all on a
    line or a plane), are compared directly. Either way the farthest pair's distance is the
    same computation, so the result does not depend on the way.
    """
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    if len(p) > max(p.shape[1] + 1, _ALL_PAIRS_POINTS):
        # Degenerate points (fewer dimensions than they have) have no hull: compare them all.
        with contextlib.suppress(QhullError):
            p = p[ConvexHull(p).vertices]
    best = 0.0
    rows = max(1, _BLOCK_ENTRIES // len(p))
    for start in range(0, len(p), rows):
        best = max(best, float(cdist(p[start : start + rows], p, "sqeuclidean").max()))
    return math.sqrt(best)


def _planar_diameter(mesh: Mesh, axis: int) -> float:
    """The largest distance between vertices that lie in one plane normal to `axis`."""
    coordinate = mesh.grid[:, axis]
    others = [a for a in range(3) if a != axis]
    order = np.argsort(coordinate, kind="stable")
    _, starts = np.unique(coordinate[order], return_index=True)
    best = 0.0
    for start, stop in zip(starts, [*starts[1:], len(order)], strict=True):
        members = order[start:stop]
        best = max(best, max_distance(mesh.vertices[members][:, others]))
    return best


def _axes(mask: BoolArray, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """Eigenvalues (least, minor, major) of the covariance of the voxel centres in mm."""
    centres = np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    centred = centres - centres.mean(axis=0)
    covariance = centred.T @ centred / len(centres)
    # A flat region (one slice thick) has a zero least eigenvalue that rounding can make
    # slightly negative: take it as zero, as pyradiomics does, rather than fail on its root.
    least, minor, major = (max(float(v), 0.0) for v in np.linalg.eigvalsh(covariance))
    return least, minor, major


def shape_features(inside: npt.ArrayLike, spacing: tuple[float, float, float]) -> dict[str, float]:
    """pyradiomics' 14 default shape features of the True voxels of a 3-D array, unprefixed
    (`SurfaceArea`, ...), in mm, mm^2 and mm^3; `spacing` in the array's axis order."""
    mask = np.asarray(inside, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"need a 3-D mask, got {mask.ndim}-D")
    if not mask.any():
        raise ValueError("mask is empty: no voxel is non-zero")
    # Only the region's bounding box matters (a 512 x 512 slab would cost the mesh 10x).
    mask = mask[tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))]
    mesh = surface_mesh(mask, spacing)
    area, volume = mesh.area(), mesh.volume()
    least, minor, major = _axes(mask, spacing)
    return {
        "MeshVolume": volume,
        "VoxelVolume": float(np.count_nonzero(mask) * math.prod(spacing)),
        "SurfaceArea": area,
        "SurfaceVolumeRatio": area / volume,
        "Sphericity": (36.0 * math.pi * volume**2) ** (1.0 / 3.0) / area,
        "Maximum3DDiameter": max_distance(mesh.vertices),
        "Maximum2DDiameterSlice": _planar_diameter(mesh, 0),
        "Maximum2DDiameterColumn": _planar_diameter(mesh, 1),
        "Maximum2DDiameterRow": _planar_diameter(mesh, 2),
        "MajorAxisLength": 4.0 * math.sqrt(major),
        "MinorAxisLength": 4.0 * math.sqrt(minor),
        "LeastAxisLength": 4.0 * math.sqrt(least),
        "Elongation": math.sqrt(minor / major) if major > 0 else 0.0,
        "Flatness": math.sqrt(least / major) if major > 0 else 0.0,
    }
