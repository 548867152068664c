"""Preprocessing as small steps composed by one pipeline.

Each step is a frozen dataclass with one job; `Pipeline.describe()` is the parameters of
every step, hashed into the stage's content address, so a changed step changes the address.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk


class Step(Protocol):
    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]: ...


@dataclass(frozen=True)
class Reorient:
    """Canonical LPS orientation, so every volume's axes mean the same thing."""

    orientation: str = "LPS"

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
        return (
            sitk.DICOMOrient(image, self.orientation),
            sitk.DICOMOrient(mask, self.orientation),
        )


@dataclass(frozen=True)
class Resample:
    """Onto a regular grid of `spacing_mm`; linear for the image, nearest for the mask."""

    spacing_mm: tuple[float, float, float]
    fill_hu: float = -1000.0

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
        spacing = np.array(image.GetSpacing())
        size = np.array(image.GetSize())
        new_size = [max(1, round(n)) for n in size * spacing / np.array(self.spacing_mm)]
        ref = sitk.Image(new_size, sitk.sitkUInt8)
        ref.SetSpacing(self.spacing_mm)
        ref.SetOrigin(image.GetOrigin())
        ref.SetDirection(image.GetDirection())
        ident = sitk.Transform()
        return (
            sitk.Resample(image, ref, ident, sitk.sitkLinear, self.fill_hu, image.GetPixelID()),
            sitk.Resample(mask, ref, ident, sitk.sitkNearestNeighbor, 0, mask.GetPixelID()),
        )


@dataclass(frozen=True)
class CropPad:
    """A fixed `shape` centred on the mask's centroid (or the image centre when it is empty)."""

    shape: tuple[int, int, int]
    fill_hu: float = -1000.0

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(mask)
        if stats.GetNumberOfLabels():
            centre = image.TransformPhysicalPointToContinuousIndex(stats.GetCentroid(1))
        else:
            centre = tuple((n - 1) / 2 for n in image.GetSize())
        start = [round(c - (s - 1) / 2) for c, s in zip(centre, self.shape, strict=True)]
        ref = sitk.Image(list(self.shape), sitk.sitkUInt8)
        ref.SetSpacing(image.GetSpacing())
        ref.SetDirection(image.GetDirection())
        ref.SetOrigin(image.TransformIndexToPhysicalPoint(start))
        ident = sitk.Transform()
        return (
            sitk.Resample(
                image, ref, ident, sitk.sitkNearestNeighbor, self.fill_hu, image.GetPixelID()
            ),
            sitk.Resample(mask, ref, ident, sitk.sitkNearestNeighbor, 0, mask.GetPixelID()),
        )


@dataclass(frozen=True)
class Window:
    """CT window to [0, 1]: the network input. Features are computed in HU, before this step."""

    level: float
    width: float

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
        lo = self.level - self.width / 2
        windowed = sitk.IntensityWindowing(
            image, lo, lo + self.width, outputMinimum=0.0, outputMaximum=1.0
        )
        return sitk.Cast(windowed, sitk.sitkFloat32), mask


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
        for step in self.steps:
            image, mask = step(image, mask)
        return image, mask

    def describe(self) -> list[dict[str, Any]]:
        return [{"step": type(s).__name__, **asdict(s)} for s in self.steps]  # type: ignore[call-overload]
