"""Voxel grids as values: what a series' headers or a stored geometry say, compared within a
tolerance (stored geometries are rounded, DS strings carry limited precision), and a mask
carried from one grid onto another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Self

import numpy as np
import SimpleITK as sitk

SAME_MM = 1e-3  # origins and spacings that agree this well are one grid
SAME_COSINE = 1e-4


class Grid(NamedTuple):
    """A 3-D grid in LPS: voxels per axis, mm between voxels, the first voxel's centre, and the
    direction matrix (9 numbers, row-major, as ITK's)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(
        cls,
        size: Sequence[int],
        spacing: Sequence[float],
        origin: Sequence[float],
        direction: Sequence[float],
    ) -> Self:
        return cls(
            tuple(int(v) for v in size),
            tuple(float(v) for v in spacing),
            tuple(float(v) for v in origin),
            tuple(float(v) for v in direction),
        )

    def matches(self, other: Grid) -> bool:
        """Same size, and origin, spacing and direction equal within the tolerances."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=SAME_MM)
            and np.allclose(self.origin, other.origin, rtol=0, atol=SAME_MM)
            and np.allclose(self.direction, other.direction, rtol=0, atol=SAME_COSINE)
        )

    def image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        """An image of zeros on this grid."""
        image = sitk.Image(list(self.size), pixel_type)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def mask_on_grid(mask: sitk.Image, grid: Grid) -> sitk.Image:
    """`mask` (nonzero = inside) on `grid`, by nearest neighbour: a uint8 mask of 0 and 1, 0
    where `grid` reaches beyond `mask`."""
    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    return sitk.Resample(binary, grid.image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
