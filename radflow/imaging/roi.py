"""The demo's region-of-interest rule: the largest bright blob is the lesion.

This is deliberately simple (smooth, threshold, largest component, fill holes) and is a stand-in
for a real segmentation model; it does not try to exclude bone or contrast-filled vessels.

On a large image the rule runs coarse to fine: the candidate is found on a box-averaged copy
and the rule itself runs at full resolution only on the candidate's box with a margin, which
gives the full-resolution rule's mask (see `coarse_to_fine_mask` for why, and when it
declines).
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from radflow.errors import QuarantineError

# The candidate is looked for on a copy of about this spacing: a 512 x 512 x 300 CT
# (0.7 x 0.7 x 1.25 mm) becomes 102 x 102 x 100, where smoothing and labelling take
# milliseconds instead of seconds. A blob the copy dilutes below the threshold (under a few
# mm across) is not found there, and the rule then runs on the whole image.
COARSE_MM = 4.0
# ITK's recursive Gaussian is an IIR filter: a voxel's smoothed value depends on its whole
# line, with weights that fall by about e^-2 per sigma (measured on its impulse response).
# 24 sigmas from the box's faces that weight is below 1e-20, so the values there are the
# whole image's to the last bit (measured: identical from 22 sigmas on).
MARGIN_SIGMAS = 24.0
# A second coarse blob at least this share of the largest one's size could be the largest
# at full resolution: the rule then runs on the whole image.
AMBIGUOUS_SHARE = 0.5
# Below this many voxels the whole image is quicker than the detour (the demo's 64 x 64 x 48
# studies, whose margin alone would cover them).
SMALL_IMAGE_VOXELS = 4_000_000


def lesion_mask(
    image: sitk.Image, threshold_hu: float = 80.0, smoothing_mm: float = 1.0
) -> sitk.Image:
    """A uint8 mask (1 = lesion) on `image`'s grid: the largest connected region above threshold.

    Smoothing first keeps noise speckle from splitting the lesion or forming spurious blobs.
    Raises QuarantineError when no voxel exceeds `threshold_hu`, so the study is set aside.
    """
    if image.GetNumberOfPixels() >= SMALL_IMAGE_VOXELS:
        mask = coarse_to_fine_mask(image, threshold_hu, smoothing_mm)
        if mask is not None:
            return mask
    return whole_image_mask(image, threshold_hu, smoothing_mm)


def whole_image_mask(
    image: sitk.Image, threshold_hu: float = 80.0, smoothing_mm: float = 1.0
) -> sitk.Image:
    """The rule at full resolution on the whole image (what `lesion_mask` always gives)."""
    largest = _largest_bright(image, threshold_hu, smoothing_mm)
    if not sitk.GetArrayViewFromImage(largest).any():
        raise QuarantineError(
            "no lesion found",
            f"no voxel above {threshold_hu:g} HU after {smoothing_mm:g} mm smoothing",
        )
    return _filled(largest, image)


def _largest_bright(image: sitk.Image, threshold_hu: float, smoothing_mm: float) -> sitk.Image:
    smoothed = sitk.Cast(image, sitk.sitkFloat32)
    if smoothing_mm > 0:
        smoothed = sitk.SmoothingRecursiveGaussian(smoothed, sigma=smoothing_mm)
    bright = sitk.Greater(smoothed, float(threshold_hu))
    components = sitk.RelabelComponent(sitk.ConnectedComponent(bright), sortByObjectSize=True)
    return sitk.Equal(components, 1)


def _filled(largest: sitk.Image, image: sitk.Image) -> sitk.Image:
    mask = sitk.Cast(
        sitk.BinaryFillhole(largest, fullyConnected=False, foregroundValue=1), sitk.sitkUInt8
    )
    mask.CopyInformation(image)
    return mask


def coarse_to_fine_mask(
    image: sitk.Image, threshold_hu: float, smoothing_mm: float
) -> sitk.Image | None:
    """The rule's mask computed on the box of the coarse candidate, or None to decline.

    Why it equals the whole-image rule: in the box, voxels at least MARGIN_SIGMAS from a face
    that is not the image's own (the "exact zone") smooth to the whole image's values; bright
    voxels outside that zone are dropped, and the largest component left must not touch the
    zone's inner faces, so all its neighbours are exactly not bright: it is a whole component
    of the full image, with nothing of it outside the box. Its holes are the same in the box
    as in the image, because the box's border around it is background and joins the image's.
    What the box cannot show is a larger blob elsewhere: that is the coarse copy's call, and
    the function declines when the coarse copy is unsure (nothing found, two blobs of similar
    size, or a box not much smaller than the image). The one way it can differ from the
    whole-image rule: a blob only a few mm thick (a long contrast-filled vessel) that box
    averaging dilutes below the threshold on the coarse copy while at full resolution it
    outnumbers the candidate's voxels.
    """
    if image.GetDimension() != 3:
        return None
    spacing = image.GetSpacing()
    size = image.GetSize()
    factors = [max(1, math.floor(COARSE_MM / s + 1e-6)) for s in spacing]
    if max(factors) == 1:
        return None
    coarse = _coarse_components(sitk.BinShrink(image, factors), threshold_hu, smoothing_mm)
    if coarse is None:
        return None
    low, high = coarse  # the candidate's box in coarse voxels, x y z, inclusive
    margin = [math.ceil(MARGIN_SIGMAS * smoothing_mm / s) for s in spacing]
    lo = [max(0, low[a] * factors[a] - margin[a] - factors[a]) for a in range(3)]
    hi = [min(size[a], (high[a] + 2) * factors[a] + margin[a]) for a in range(3)]
    # BinShrink leaves out the last size % factor voxels of an axis: a candidate at the
    # coarse copy's end may reach into them.
    hi = [size[a] if high[a] + 1 >= size[a] // factors[a] else hi[a] for a in range(3)]
    extent = [h - low_ for low_, h in zip(lo, hi, strict=True)]
    if math.prod(extent) * 4 > image.GetNumberOfPixels():
        return None
    box = sitk.RegionOfInterest(image, extent, lo)
    smoothed = sitk.Cast(box, sitk.sitkFloat32)
    if smoothing_mm > 0:
        smoothed = sitk.SmoothingRecursiveGaussian(smoothed, sigma=smoothing_mm)
    bright = sitk.GetArrayFromImage(sitk.Greater(smoothed, float(threshold_hu)))
    # The exact zone, (z, y, x) like the array: the margin on every face that is not the
    # image's own.
    zone = []
    for a in (2, 1, 0):
        start = 0 if lo[a] == 0 else margin[a]
        stop = extent[a] if hi[a] == size[a] else extent[a] - margin[a]
        if stop - start < 3:
            return None
        zone.append((start, stop, lo[a] == 0, hi[a] == size[a]))
    kept = np.zeros_like(bright)
    inner = tuple(slice(start, stop) for start, stop, _, _ in zone)
    kept[inner] = bright[inner]
    if not kept.any():
        return None
    kept_image = sitk.GetImageFromArray(kept)
    largest = sitk.GetArrayFromImage(
        sitk.Equal(
            sitk.RelabelComponent(sitk.ConnectedComponent(kept_image), sortByObjectSize=True), 1
        )
    )
    for axis, (start, stop, at_image_low, at_image_high) in enumerate(zone):
        present = np.flatnonzero(largest.any(axis=tuple(b for b in range(3) if b != axis)))
        if (present[0] == start and not at_image_low) or (
            present[-1] == stop - 1 and not at_image_high
        ):
            return None  # it may go on outside the zone
    filled = sitk.GetArrayFromImage(
        sitk.BinaryFillhole(
            sitk.GetImageFromArray(largest), fullyConnected=False, foregroundValue=1
        )
    )
    whole = np.zeros(image.GetSize()[::-1], dtype=np.uint8)
    whole[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = filled
    mask = sitk.GetImageFromArray(whole)
    mask.CopyInformation(image)
    return mask


def _coarse_components(
    coarse: sitk.Image, threshold_hu: float, smoothing_mm: float
) -> tuple[list[int], list[int]] | None:
    """The largest bright blob's box on the coarse copy (x y z, inclusive), or None when
    there is none or a second one is nearly as large."""
    smoothed = sitk.Cast(coarse, sitk.sitkFloat32)
    if smoothing_mm > 0:
        smoothed = sitk.SmoothingRecursiveGaussian(smoothed, sigma=smoothing_mm)
    relabel = sitk.RelabelComponentImageFilter()
    relabel.SortByObjectSizeOn()
    labels = relabel.Execute(sitk.ConnectedComponent(sitk.Greater(smoothed, float(threshold_hu))))
    sizes = relabel.GetSizeOfObjectsInPixels()
    if not sizes or (len(sizes) > 1 and sizes[1] >= AMBIGUOUS_SHARE * sizes[0]):
        return None
    found = np.argwhere(sitk.GetArrayViewFromImage(labels) == 1)  # z y x
    return found.min(axis=0)[::-1].tolist(), found.max(axis=0)[::-1].tolist()
