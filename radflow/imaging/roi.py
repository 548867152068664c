"""The demo's region-of-interest rule: the largest bright blob is the lesion.

This is deliberately simple (smooth, threshold, largest component, fill holes) and is a stand-in
for a real segmentation model; it does not try to exclude bone or contrast-filled vessels.
"""

from __future__ import annotations

import SimpleITK as sitk

from radflow.errors import QuarantineError


def lesion_mask(
    image: sitk.Image, threshold_hu: float = 80.0, smoothing_mm: float = 1.0
) -> sitk.Image:
    """A uint8 mask (1 = lesion) on `image`'s grid: the largest connected region above threshold.

    Smoothing first keeps noise speckle from splitting the lesion or forming spurious blobs.
    Raises QuarantineError when no voxel exceeds `threshold_hu`, so the study is set aside.
    """
    smoothed = sitk.Cast(image, sitk.sitkFloat32)
    if smoothing_mm > 0:
        smoothed = sitk.SmoothingRecursiveGaussian(smoothed, sigma=smoothing_mm)
    bright = sitk.Greater(smoothed, float(threshold_hu))
    components = sitk.RelabelComponent(sitk.ConnectedComponent(bright), sortByObjectSize=True)
    largest = sitk.Equal(components, 1)
    if not sitk.GetArrayViewFromImage(largest).any():
        raise QuarantineError(
            "no lesion found",
            f"no voxel above {threshold_hu:g} HU after {smoothing_mm:g} mm smoothing",
        )
    mask = sitk.Cast(
        sitk.BinaryFillhole(largest, fullyConnected=False, foregroundValue=1), sitk.sitkUInt8
    )
    mask.CopyInformation(image)
    return mask
