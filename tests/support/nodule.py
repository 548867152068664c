"""A realistic radiomics case: a 20 mm nodule in a 512 x 512 x 300 CT (numpy and SimpleITK
only, so bench/nodule_bench.py builds it before it imports radflow)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def nodule_in_ct() -> tuple[sitk.Image, sitk.Image]:
    """A 512 x 512 x 300 CT (0.7 x 0.7 x 1.25 mm, int16 HU) with a lobulated 20 mm nodule."""
    rng = np.random.default_rng(7)
    spacing = (0.7, 0.7, 1.25)
    hu = rng.integers(-1020, -980, (300, 512, 512), dtype=np.int16)  # air
    hu[:, 60:450, 40:470] += 1040  # a body of soft tissue (20-60 HU)
    z, y, x = np.ogrid[135:166, 225:275, 275:325]
    dz, dy, dx = (z - 150.3) * spacing[2], (y - 249.6) * spacing[1], (x - 300.2) * spacing[0]
    radius = 10 * (1 + 0.15 * np.cos(3 * np.arctan2(dy, dx)))
    inside = dx**2 + dy**2 + dz**2 <= radius**2
    box = hu[135:166, 225:275, 275:325]
    box[inside] = (60 + rng.normal(0, 30, int(inside.sum()))).astype(np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    image.SetOrigin((-180.0, -200.0, -900.5))
    mask_array = np.zeros(hu.shape, np.uint8)
    mask_array[135:166, 225:275, 275:325] = inside
    mask = sitk.GetImageFromArray(mask_array)
    mask.CopyInformation(image)
    return image, mask
