"""A study's region of interest from the segmentation model: the image in, a mask on its grid out.

The network runs on the model's isotropic grid and only around the body (air is most of a CT's
field of view and MONAI's inferer would slide windows over all of it); the probability goes
back onto the study's own grid, where it is thresholded and post-processed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
import torch

from radflow.imaging.preprocess import Grid, resample
from radflow.segmentation.model import SegmentationModel
from radflow.segmentation.network import window
from radflow.segmentation.params import SegmentationParams
from radflow.segmentation.postprocess import EMPTY, largest_component, volume_ml, volume_problem
from radflow.segmentation.sliding import mirrored_probabilities, probabilities

AIR_HU = -1024.0  # what the model grid holds beyond the image
_SLAB = 32  # input slices resampled back at a time: bounds the float32 working copy

Box = tuple[slice, slice, slice]


@dataclass(frozen=True, eq=False)
class Segmentation:
    """`mask`: uint8 0/1 on the input image's grid, the largest component only. `components`:
    connected components above the threshold before one was kept. `problem`: None, or why the
    mask should not be used ("empty", "too small", "too large")."""

    mask: sitk.Image
    volume_ml: float
    components: int
    problem: str | None


def model_grid(image: sitk.Image, spacing_mm: Sequence[float]) -> Grid:
    """The model's grid for `image`: `spacing_mm` (z, y, x), the image's origin and direction,
    and enough voxels that every voxel centre of the image lies inside it."""
    spacing = tuple(float(s) for s in reversed(spacing_mm))  # SimpleITK's x, y, z
    size = tuple(
        max(1, math.ceil((n - 1) * s / t - 1e-6) + 1)
        for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing, strict=True)
    )
    return Grid(size, spacing, image.GetOrigin(), image.GetDirection())


def body_box(
    hu: npt.NDArray[np.floating], threshold_hu: float, margin: Sequence[int]
) -> Box | None:
    """The (z, y, x) bounding box of the voxels above `threshold_hu`, widened by `margin`
    voxels per axis and clipped to the array; None when no voxel is above it."""
    body = hu > threshold_hu
    if not body.any():
        return None
    box = []
    for axis, (extra, n) in enumerate(zip(margin, hu.shape, strict=True)):
        others = tuple(a for a in range(3) if a != axis)
        found = np.flatnonzero(body.any(axis=others))
        box.append(slice(max(0, int(found[0]) - extra), min(n, int(found[-1]) + 1 + extra)))
    return box[0], box[1], box[2]


def _on_model_grid(image: sitk.Image, grid: Grid) -> sitk.Image:
    """`image` linearly resampled onto `grid` as float32 HU (air beyond the image)."""
    f = sitk.ResampleImageFilter()
    f.SetSize(list(grid.size))
    f.SetOutputSpacing(grid.spacing)
    f.SetOutputOrigin(grid.origin)
    f.SetOutputDirection(grid.direction)
    f.SetInterpolator(sitk.sitkLinear)
    f.SetDefaultPixelValue(AIR_HU)
    f.SetOutputPixelType(sitk.sitkFloat32)
    return f.Execute(image)


def _reach(grid: Grid, box: Box, target: Grid) -> tuple[list[int], list[int]] | None:
    """The (i, j, k) start and size of the part of `target` that linear interpolation of
    `grid` can give a nonzero value when only `box` is nonzero: the box plus one voxel."""
    lo = [box[2].start - 1, box[1].start - 1, box[0].start - 1]
    hi = [box[2].stop, box[1].stop, box[0].stop]
    box_corners = np.array(np.meshgrid(*zip(lo, hi, strict=True))).reshape(3, -1).T
    corners = np.array([target.index(grid.point(c)) for c in box_corners])
    start = np.maximum(0, np.floor(corners.min(axis=0))).astype(int)
    stop = np.minimum(np.array(target.size), np.ceil(corners.max(axis=0)) + 1).astype(int)
    if (stop <= start).any():
        return None
    return start.tolist(), (stop - start).tolist()


def _threshold_on(
    image: sitk.Image, probability: sitk.Image, threshold: float, box: Box
) -> sitk.Image:
    """`probability > threshold` on `image`'s grid (uint8), interpolated linearly slab by slab
    and only where the probability can be nonzero."""
    target = Grid.of(image)
    out = np.zeros(tuple(reversed(image.GetSize())), dtype=np.uint8)
    reach = _reach(Grid.of(probability), box, target)
    if reach is not None:
        (i, j, k), (ni, nj, nk) = reach
        for z in range(k, k + nk, _SLAB):
            depth = min(_SLAB, k + nk - z)
            part = resample(
                probability, target.window((i, j, z), (ni, nj, depth)), sitk.sitkLinear, 0.0
            )
            out[z : z + depth, j : j + nj, i : i + ni] = (
                sitk.GetArrayViewFromImage(part) > threshold
            )
    mask = sitk.GetImageFromArray(out)
    mask.CopyInformation(image)
    return mask


def _empty(image: sitk.Image) -> Segmentation:
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    return Segmentation(mask, 0.0, 0, EMPTY)


def threshold_map(
    model: SegmentationModel, image: sitk.Image, *, device: str | torch.device = "cpu"
) -> sitk.Image | None:
    """The voxels of `image` (a 3-D HU image on any grid) whose probability is above the
    model's threshold, as uint8 on its grid, before post-processing; None when no voxel is
    above the body threshold (the network does not run)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("segmentation needs a 3-D scalar image")
    params = model.params
    grid = model_grid(image, model.spacing_mm)
    hu = _on_model_grid(image, grid)
    hu_array = sitk.GetArrayViewFromImage(hu)
    box = body_box(hu_array, params.body_threshold_hu, [p // 2 for p in params.patch])
    if box is None:
        return None
    # The net slides windows over the body's box only; the rest of the grid is background.
    predict = mirrored_probabilities if params.mirror else probabilities
    inside = predict(model.network(device), window(hu_array[box], params), params, device)
    del hu_array, hu
    probability = np.zeros(tuple(reversed(grid.size)), dtype=np.float32)
    probability[box] = inside
    del inside
    probability_image = sitk.GetImageFromArray(probability)
    del probability
    probability_image.SetSpacing(grid.spacing)
    probability_image.SetOrigin(grid.origin)
    probability_image.SetDirection(grid.direction)
    return _threshold_on(image, probability_image, params.threshold, box)


def postprocessed(
    above: sitk.Image | None, image: sitk.Image, params: SegmentationParams
) -> Segmentation:
    """`threshold_map`'s result as a Segmentation: the largest component and its checks."""
    if above is None:
        return _empty(image)
    kept, components = largest_component(above)
    volume = volume_ml(kept)
    return Segmentation(kept, volume, components, volume_problem(volume, params))


def segment_image(
    model: SegmentationModel, image: sitk.Image, *, device: str | torch.device = "cpu"
) -> Segmentation:
    """The region of interest `model` finds in `image` (a 3-D HU image on any grid).

    An image without a voxel above the body threshold is "empty" without running the network.
    """
    return postprocessed(threshold_map(model, image, device=device), image, model.params)
