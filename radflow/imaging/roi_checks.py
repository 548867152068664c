"""What can be wrong with a region of interest once it is on the cropped grid features read.

A wrong ROI gives confident, meaningless numbers (the review found the threshold rule
measuring the spine on chest CT and the whole crop on MR), so every study's ROI is checked
and each doubt becomes a QC warning that the study report shows. Only an empty ROI stops the
study: there is nothing to measure.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from radflow.errors import QuarantineError

#: Cortical bone starts around here; soft tissue and lesions stay well below it.
BONE_HU = 300.0
#: The share of ROI voxels above BONE_HU that makes it "mostly bone".
MOSTLY = 0.5
#: An ROI covering more of the crop than this is the crop, not a lesion in it.
FILLS_CROP = 0.5


def roi_warnings(image: sitk.Image, roi: sitk.Image, modality: str) -> list[str]:
    """The QC warnings of `roi` (uint8, on `image`'s grid); QuarantineError when it is empty."""
    mask = sitk.GetArrayViewFromImage(roi) > 0
    voxels = int(np.count_nonzero(mask))
    if voxels == 0:
        raise QuarantineError(
            "ROI is empty after cropping",
            "the region of interest lies outside the preprocessed crop",
        )
    warnings = []
    # Any face of the crop: the lesion may go on beyond what features see.
    faces = (mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1])
    if any(face.any() for face in faces):
        warnings.append("ROI touches the crop border: the lesion may extend beyond the crop")
    share = voxels / mask.size
    if share > FILLS_CROP:
        warnings.append(f"ROI fills {share:.0%} of the crop: it is likely not a lesion")
    if modality == "CT":
        values = sitk.GetArrayViewFromImage(image)[mask]
        bone = float(np.count_nonzero(values > BONE_HU)) / voxels
        if bone > MOSTLY:
            warnings.append(f"ROI is mostly bone ({bone:.0%} of it above {BONE_HU:g} HU)")
    return warnings
