"""From a thresholded prediction to the region a clinical pipeline may use: the largest
connected component, its volume, and whether that volume is plausible."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from radflow.segmentation.params import SegmentationParams

EMPTY = "empty"
TOO_SMALL = "too small"
TOO_LARGE = "too large"


def largest_component(mask: sitk.Image) -> tuple[sitk.Image, int]:
    """The largest face-connected component of `mask` (nonzero = inside) as a uint8 0/1 mask
    on its grid, and how many components there were.

    Labelling runs only on the mask's bounding box: a lesion is small, and a uint32 label
    image of a whole 512×512×300 CT would take 300 MiB."""
    inside = sitk.GetArrayViewFromImage(mask) != 0
    out = np.zeros(inside.shape, dtype=np.uint8)
    components = 0
    if inside.any():
        box = tuple(
            slice(int(v[0]), int(v[-1]) + 1)
            for v in (np.flatnonzero(inside.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1)))
        )
        labels = sitk.ConnectedComponent(sitk.GetImageFromArray(inside[box].astype(np.uint8)))
        relabel = sitk.RelabelComponentImageFilter()  # label 1 is then the largest
        relabel.SetSortByObjectSize(True)
        ranked = relabel.Execute(labels)
        components = int(relabel.GetNumberOfObjects())
        out[box] = sitk.GetArrayViewFromImage(ranked) == 1
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(mask)
    return result, components


def volume_ml(mask: sitk.Image) -> float:
    """The volume of the nonzero voxels of `mask` in millilitres."""
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return voxels * float(math.prod(mask.GetSpacing())) / 1000.0


def volume_problem(volume: float, params: SegmentationParams) -> str | None:
    """None when `volume` (ml) is plausible, else why not: "empty", "too small", "too large"."""
    if volume <= 0:
        return EMPTY
    if volume < params.min_volume_ml:
        return TOO_SMALL
    if volume > params.max_volume_ml:
        return TOO_LARGE
    return None
