"""Preprocessing as small steps composed by one pipeline.

Each step is a frozen dataclass with one job; `Pipeline.describe()` is the parameters of
every step, hashed into the stage's content address, so a changed step changes the address.
A step takes and returns `(image, mask)`; the mask (the ROI, labels kept) may be None for
image-only work such as inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

Mask: TypeAlias = sitk.Image | None
Within = Literal["image", "body", "mask"]

# Body detection works on a box-averaged copy of at most this many voxels: the body centre and
# an Otsu threshold need millimetres and a histogram, not every voxel (0.1 s on a 512² CT
# instead of several seconds).
_COARSE_VOXELS = 2**20


class Step(Protocol):
    def __call__(self, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]: ...


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class Grid:
    """A voxel grid in physical space: what a resample writes onto, without any pixels."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def _matrix(self) -> npt.NDArray[np.float64]:
        d = np.array(self.direction, dtype=np.float64).reshape(len(self.size), -1)
        m: npt.NDArray[np.float64] = d * np.array(self.spacing)
        return m

    def point(self, index: npt.ArrayLike) -> tuple[float, ...]:
        """The physical point of a (continuous) index."""
        p = np.array(self.origin) + self._matrix() @ np.asarray(index, dtype=np.float64)
        return tuple(float(v) for v in p)

    def index(self, point: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The continuous index of a physical point."""
        out: npt.NDArray[np.float64] = np.linalg.solve(
            self._matrix(), np.asarray(point, dtype=np.float64) - np.array(self.origin)
        )
        return out

    def window(self, start: Sequence[int], size: Sequence[int]) -> Grid:
        """The sub-grid of `size` voxels from `start` (which may lie outside this grid)."""
        return Grid(tuple(size), self.spacing, self.point(start), self.direction)


def resample(image: sitk.Image, grid: Grid, interpolator: int, fill: float) -> sitk.Image:
    """`image` on `grid` (identity transform), keeping its pixel type.

    The filter is configured directly: no reference image is allocated, and ITK's scanline
    fast path for linear transforms applies (the identity is linear).
    """
    f = sitk.ResampleImageFilter()
    f.SetSize(list(grid.size))
    f.SetOutputSpacing(grid.spacing)
    f.SetOutputOrigin(grid.origin)
    f.SetOutputDirection(grid.direction)
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(fill)
    f.SetOutputPixelType(image.GetPixelID())
    return f.Execute(image)


def _float32(image: sitk.Image) -> sitk.Image:
    """`image` as float32, without a copy when it already is."""
    if image.GetPixelID() == sitk.sitkFloat32:
        return image
    return sitk.Cast(image, sitk.sitkFloat32)


# --------------------------------------------------------------------------- body and ROI


def _coarse(image: sitk.Image) -> sitk.Image:
    """A box-averaged float32 copy of at most about `_COARSE_VOXELS` voxels."""
    n = math.prod(image.GetSize())
    factor = max(1, math.ceil((n / _COARSE_VOXELS) ** (1 / 3)))
    factors = [min(factor, s) for s in image.GetSize()]
    return _float32(sitk.BinShrink(image, factors) if factor > 1 else image)


def body_threshold(image: sitk.Image, threshold: float | None = None) -> float:
    """`threshold`, or Otsu's threshold of a coarse copy when None (air vs body, any modality)."""
    if threshold is not None:
        return threshold
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.Execute(_coarse(image))
    return float(otsu.GetThreshold())


def body_mask(image: sitk.Image, threshold: float | None = None) -> sitk.Image:
    """A uint8 mask of the voxels above the body threshold (see `body_threshold`)."""
    return sitk.Greater(image, body_threshold(image, threshold))


def _centroid(grid_of: sitk.Image, inside: npt.NDArray[np.bool_]) -> tuple[float, ...] | None:
    """The physical centroid of the true voxels of `inside` (a z, y, x array on `grid_of`).

    From the marginal counts along each axis: exact, without materialising every voxel's index.
    """
    others = {2: (0, 1), 1: (0, 2), 0: (1, 2)}  # numpy axis (z, y, x) -> the axes summed out
    counts = [np.count_nonzero(inside, axis=others[axis]) for axis in (2, 1, 0)]  # i, j, k
    total = int(counts[0].sum())
    if total == 0:
        return None
    centre = [float(np.dot(c, np.arange(len(c)))) / total for c in counts]
    return tuple(grid_of.TransformContinuousIndexToPhysicalPoint(centre))


def body_centre(image: sitk.Image, threshold: float | None = None) -> tuple[float, ...]:
    """The centroid of the body (above `body_threshold`), or the image centre when none is.

    Measured on the coarse copy: a crop needs the body centre to a few millimetres.
    """
    coarse = _coarse(image)
    t = body_threshold(image, threshold)
    found = _centroid(coarse, sitk.GetArrayViewFromImage(coarse) > t)
    if found is not None:
        return found
    return Grid.of(image).point([(n - 1) / 2 for n in image.GetSize()])


def roi_centre(mask: Mask) -> tuple[float, ...] | None:
    """The centroid of every labelled (non-zero) voxel of `mask`; None when there are none."""
    if mask is None:
        return None
    return _centroid(mask, sitk.GetArrayViewFromImage(mask) != 0)


def _region(image: sitk.Image, mask: Mask, within: Within, threshold: float | None) -> sitk.Image:
    """A uint8 mask of the voxels whose statistics normalise the image.

    "mask" falls back to the body when the mask is empty, and "body" to the whole image when
    nothing is above the threshold (a blank image), so a statistic always exists.
    """
    if within == "mask" and mask is not None and sitk.GetArrayViewFromImage(mask).any():
        return sitk.Cast(mask != 0, sitk.sitkUInt8)
    if within in ("mask", "body"):
        body = body_mask(image, threshold)
        if sitk.GetArrayViewFromImage(body).any():
            return body
    whole = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    whole.CopyInformation(image)
    return whole


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Reorient:
    """Canonical LPS orientation, so every volume's axes mean the same thing."""

    orientation: str = "LPS"

    def _reorient(self, image: sitk.Image) -> sitk.Image:
        # Most series already are LPS (DICOM's frame); DICOMOrient would still copy them.
        current = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
            image.GetDirection()
        )
        return image if current == self.orientation else sitk.DICOMOrient(image, self.orientation)

    def __call__(self, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]:
        return self._reorient(image), None if mask is None else self._reorient(mask)


MaskInterpolator = Literal["nearest", "label_gaussian"]
_MASK_INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "label_gaussian": sitk.sitkLabelGaussian,
}


@dataclass(frozen=True)
class Resample:
    """Onto a regular grid of `spacing_mm`: linear for the image, label-preserving for the mask.

    "nearest" keeps labels and is cheap; "label_gaussian" also keeps labels but votes over a
    Gaussian neighbourhood, so downsampled borders are smoother (and it is much slower).
    """

    spacing_mm: tuple[float, float, float]
    fill_hu: float = -1000.0
    mask_interpolator: MaskInterpolator = "nearest"

    def grid(self, image: sitk.Image) -> Grid:
        """The output grid: same origin and direction, the same extent rounded to whole voxels."""
        size = tuple(
            max(1, round(n * s / t))
            for n, s, t in zip(image.GetSize(), image.GetSpacing(), self.spacing_mm, strict=True)
        )
        return Grid(size, tuple(self.spacing_mm), image.GetOrigin(), image.GetDirection())

    def onto(self, grid: Grid, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]:
        """`image` and `mask` resampled onto `grid` (this step's grid or a window of it)."""
        out = resample(image, grid, sitk.sitkLinear, self.fill_hu)
        if mask is None:
            return out, None
        return out, resample(mask, grid, _MASK_INTERPOLATORS[self.mask_interpolator], 0)

    def __call__(self, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]:
        grid = self.grid(image)
        if grid == Grid.of(image):
            return image, mask  # already there: no copy
        return self.onto(grid, image, mask)


@dataclass(frozen=True)
class CropPad:
    """A fixed `shape` centred on the ROI's centroid, or on the body centre when it is empty.

    The body is what lies above `body_threshold` (None: Otsu's threshold), so an off-centre
    patient is not cropped around air. Voxels outside the input are `fill_hu`.
    """

    shape: tuple[int, int, int]
    fill_hu: float = -1000.0
    body_threshold: float | None = None

    def centre(self, image: sitk.Image, mask: Mask) -> tuple[float, ...]:
        found = roi_centre(mask)
        return found if found is not None else body_centre(image, self.body_threshold)

    def start(self, grid: Grid, centre: Sequence[float]) -> list[int]:
        """The index (in `grid`) of the crop's first voxel, so `centre` is its middle."""
        c = grid.index(centre)
        # Halves round up, past a 1e-6 voxel margin: a centre on a voxel with an even shape
        # (the usual case) lands exactly on .5, where last-bit noise must not pick the side.
        return [
            math.floor(float(v) - (s - 1) / 2 + 0.5 + 1e-6)
            for v, s in zip(c, self.shape, strict=True)
        ]

    def _pads(self, size: Sequence[int], start: Sequence[int]) -> tuple[list[int], list[int]]:
        """Voxels of the crop before and after the input, per axis."""
        before = [max(0, -a) for a in start]
        after = [max(0, a + s - n) for a, s, n in zip(start, self.shape, size, strict=True)]
        return before, after

    def _inside(self, size: Sequence[int], start: Sequence[int]) -> tuple[list[int], list[int]]:
        """The start and size of the part of the crop that lies inside the input."""
        before, after = self._pads(size, start)
        lo = [a + b for a, b in zip(start, before, strict=True)]
        extent = [max(0, s - b - c) for s, b, c in zip(self.shape, before, after, strict=True)]
        return lo, extent

    def _pad(
        self, part: sitk.Image, start: Sequence[int], size: Sequence[int], fill: float
    ) -> sitk.Image:
        before, after = self._pads(size, start)
        if not any(before) and not any(after):
            return part
        return sitk.ConstantPad(part, before, after, fill)

    def _empty(self, grid: Grid, like: sitk.Image, fill: float) -> sitk.Image:
        """The crop when it misses the input entirely (only possible for a far-off centre)."""
        out = sitk.Image(list(self.shape), like.GetPixelID()) + fill
        out.SetSpacing(grid.spacing)
        out.SetOrigin(grid.origin)
        out.SetDirection(grid.direction)
        return out

    def __call__(self, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]:
        start = self.start(Grid.of(image), self.centre(image, mask))
        size = image.GetSize()
        lo, extent = self._inside(size, start)
        if 0 in extent:
            crop = Grid.of(image).window(start, self.shape)
            empty = None if mask is None else self._empty(crop, mask, 0)
            return self._empty(crop, image, self.fill_hu), empty

        # RegionOfInterest copies a block (no interpolation); ConstantPad adds what is outside.
        def cut(img: sitk.Image, fill: float) -> sitk.Image:
            return self._pad(sitk.RegionOfInterest(img, extent, lo), start, size, fill)

        return cut(image, self.fill_hu), None if mask is None else cut(mask, 0)


def _resampled_roi_centre(step: Resample, grid: Grid, mask: Mask) -> tuple[float, ...] | None:
    """`roi_centre(step(image, mask)[1])` without resampling the whole mask.

    With nearest-neighbour interpolation only output voxels within half an input voxel of the
    mask's bounding box can be labelled, so resampling that box (plus a margin) gives the
    same labelled voxels, hence the same centroid, as resampling everything. Label-Gaussian
    votes over a wider neighbourhood, so it resamples the whole mask.
    """
    if mask is None:
        return None
    inside = sitk.GetArrayViewFromImage(mask) != 0
    if not inside.any():
        return None
    if step.mask_interpolator != "nearest":
        return roi_centre(resample(mask, grid, _MASK_INTERPOLATORS[step.mask_interpolator], 0))
    nonzero = [np.flatnonzero(inside.any(axis=o)) for o in ((0, 1), (0, 2), (1, 2))]  # i, j, k
    box = [(float(v[0]) - 0.51, float(v[-1]) + 0.51) for v in nonzero]
    native = Grid.of(mask)
    corners = np.array(
        [
            grid.index(native.point(corner))
            for corner in np.array(np.meshgrid(*box)).reshape(3, -1).T
        ]
    )
    lo = np.maximum(0, np.floor(corners.min(axis=0))).astype(int)
    hi = np.minimum(np.array(grid.size) - 1, np.ceil(corners.max(axis=0))).astype(int)
    if (hi < lo).any():
        return None  # every labelled voxel falls outside the resampled grid
    part = resample(
        mask, grid.window(lo.tolist(), (hi - lo + 1).tolist()), sitk.sitkNearestNeighbor, 0
    )
    return roi_centre(part)


def resample_crop(
    resample_step: Resample, crop: CropPad, image: sitk.Image, mask: Mask
) -> tuple[sitk.Image, Mask]:
    """`crop(*resample_step(image, mask))`, interpolating only the voxels the crop keeps.

    The crop's window is placed on the resampled grid as CropPad would place it (the ROI
    centroid is that of the resampled mask, found from its bounding box), and only that
    window (clipped to the resampled grid, then padded) is interpolated: for a 192³ crop of a
    512² CT at 1.5 mm that is a quarter of the work, for the 40³ ROI crop almost none. The
    result equals the two steps in turn, with one exception: without an ROI, the body centre
    is measured on the input, not the resampled image, which can move the window by a voxel.
    """
    grid = resample_step.grid(image)
    centre = _resampled_roi_centre(resample_step, grid, mask)
    if centre is None:
        centre = body_centre(image, crop.body_threshold)
    start = crop.start(grid, centre)
    lo, extent = crop._inside(grid.size, start)
    if 0 in extent:
        return crop._empty(grid.window(start, crop.shape), image, crop.fill_hu), (
            None if mask is None else crop._empty(grid.window(start, crop.shape), mask, 0)
        )
    out, out_mask = resample_step.onto(grid.window(lo, extent), image, mask)
    return (
        crop._pad(out, start, grid.size, crop.fill_hu),
        None if out_mask is None else crop._pad(out_mask, start, grid.size, 0),
    )


@dataclass(frozen=True)
class Window:
    """CT window to [0, 1]: the network input. Features are computed in HU, before this step."""

    level: float
    width: float

    def __call__(self, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]:
        lo = self.level - self.width / 2
        # Float first: windowing an integer image to [0, 1] would leave only 0 and 1.
        windowed = sitk.IntensityWindowing(
            _float32(image), lo, lo + self.width, outputMinimum=0.0, outputMaximum=1.0
        )
        return windowed, mask


@dataclass(frozen=True)
class ZScore:
    """MR intensities to zero mean and unit standard deviation over the body (or the ROI).

    MR has no absolute scale, so each volume is standardised by its own tissue statistics;
    the body (not the whole field of view) keeps the amount of air from setting the scale.
    """

    within: Within = "body"
    body_threshold: float | None = None

    def __call__(self, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]:
        image = _float32(image)
        stats = sitk.LabelStatisticsImageFilter()
        stats.Execute(image, _region(image, mask, self.within, self.body_threshold))
        mean, std = stats.GetMean(1), stats.GetSigma(1)
        return sitk.ShiftScale(image, -mean, 1.0 / std if std > 0 else 1.0), mask


@dataclass(frozen=True)
class Percentile:
    """Clip to the `low`..`high` percentiles (of the body, by default) and scale to [0, 1].

    Robust to the few very bright voxels (vessels, fat, artefacts) that would set a min-max
    scale.
    """

    low: float = 0.5
    high: float = 99.5
    within: Within = "body"
    body_threshold: float | None = None

    def __call__(self, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]:
        image = _float32(image)
        region = _region(image, mask, self.within, self.body_threshold)
        values = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(region) != 0]
        lo, hi = (float(v) for v in np.percentile(values, [self.low, self.high]))
        hi = hi if hi > lo else lo + 1.0  # a constant region: map it to 0, not divide by 0
        return sitk.IntensityWindowing(image, lo, hi, 0.0, 1.0), mask


@dataclass(frozen=True)
class N4:
    """N4 bias-field correction (MR): divide out the smooth multiplicative coil shading.

    The field is fitted on a copy shrunk by `shrink` (it is smooth, so this loses nothing and
    is about shrink³ times faster) within the body, then evaluated at full resolution.
    """

    shrink: int = 4
    iterations: tuple[int, ...] = (50, 50, 50, 50)
    body_threshold: float | None = None

    def __call__(self, image: sitk.Image, mask: Mask) -> tuple[sitk.Image, Mask]:
        image = _float32(image)
        body = body_mask(image, self.body_threshold)
        factors = [max(1, min(self.shrink, n // 4)) for n in image.GetSize()]
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations(list(self.iterations))
        n4.Execute(sitk.Shrink(image, factors), sitk.Shrink(body, factors))
        log_bias = n4.GetLogBiasFieldAsImage(image)
        return sitk.Divide(image, sitk.Exp(log_bias)), mask


@dataclass(frozen=True)
class Pipeline:
    """Steps in order. A Resample directly followed by a CropPad runs as one `resample_crop`."""

    steps: tuple[Step, ...]

    def __call__(self, image: sitk.Image, mask: Mask = None) -> tuple[sitk.Image, Mask]:
        i = 0
        while i < len(self.steps):
            step, after = self.steps[i], self.steps[i + 1 : i + 2]
            if isinstance(step, Resample) and after and isinstance(after[0], CropPad):
                image, mask = resample_crop(step, after[0], image, mask)
                i += 2
            else:
                image, mask = step(image, mask)
                i += 1
        return image, mask

    def step_by_step(self, image: sitk.Image, mask: Mask = None) -> tuple[sitk.Image, Mask]:
        """Each step in turn, unfused: the reference the fused run is tested against."""
        for step in self.steps:
            image, mask = step(image, mask)
        return image, mask

    def describe(self) -> list[dict[str, Any]]:
        return [{"step": type(s).__name__, **asdict(s)} for s in self.steps]  # type: ignore[call-overload]
