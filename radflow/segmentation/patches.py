"""Training patches: where they are cut, and how they are augmented.

Every draw of sample `index` in `epoch` comes from `np.random.default_rng([seed, epoch,
index])`, never from a global or per-worker random state: a patch is the same whichever
process draws it and wherever a training resumed, which is what makes data-parallel training
match one process and a resumed training match one that ran through.

Crop, padding, rotation and scale are one `scipy.ndimage.affine_transform` from the patch's
grid into the volume: only the patch's voxels are interpolated, no random state lives in a
transform object (MONAI's Rand* transforms each keep one, to be re-seeded per sample), and a
volume smaller than the patch is padded with zeros by the same call. Without augmentation a
patch is a plain crop (the same voxels, a copy instead of an interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

from radflow.segmentation.params import SegmentationParams

Image = npt.NDArray[np.float32]
Mask = npt.NDArray[np.uint8]

MAX_ROTATION_DEG = 10.0
SCALE_RANGE = (0.9, 1.1)
INTENSITY_SCALE_RANGE = (0.9, 1.1)
INTENSITY_SHIFT = 0.05


@dataclass(frozen=True)
class Case:
    """One annotated volume: `image` windowed to [0, 1], `mask` 0/1, both (z, y, x)."""

    key: str
    image: Image = field(repr=False)
    mask: Mask = field(repr=False)

    def __post_init__(self) -> None:
        image, mask = self.image, self.mask
        if not isinstance(image, np.ndarray) or image.dtype != np.float32 or image.ndim != 3:
            raise ValueError(f"case {self.key}: image must be a 3-D float32 array")
        if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8:
            raise ValueError(f"case {self.key}: mask must be a uint8 array")
        if mask.shape != image.shape:
            raise ValueError(
                f"case {self.key}: image shape {list(image.shape)} != mask shape {list(mask.shape)}"
            )
        if image.size == 0:
            raise ValueError(f"case {self.key}: empty image")
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(f"case {self.key}: image must be windowed to [0, 1] (finite)")
        if mask.max() > 1:
            raise ValueError(f"case {self.key}: mask values must be 0 or 1")


@dataclass(frozen=True)
class Draw:
    """What the random generator decided for one sample (before any voxel is touched)."""

    case: int
    foreground: bool
    centre: tuple[int, int, int]
    rotation: npt.NDArray[np.float64]  # 3x3, identity without augmentation
    scale: float
    flips: tuple[int, ...]
    intensity_scale: float
    intensity_shift: float


class PatchSampler:
    """Patches of `params.patch` from `cases`, addressed by (epoch, index)."""

    def __init__(self, cases: Sequence[Case], params: SegmentationParams, seed: int) -> None:
        if not cases:
            raise ValueError("no cases to sample patches from")
        self.cases = list(cases)
        self.params = params
        self.seed = seed
        # Flat indices of the annotation per case, found once: drawing a foreground centre
        # is then one integer draw.
        self._foreground = [np.flatnonzero(c.mask) for c in self.cases]

    def draw(self, epoch: int, index: int) -> Draw:
        rng = np.random.default_rng([self.seed, epoch, index])
        p = self.params
        case = int(rng.integers(len(self.cases)))
        shape = self.cases[case].image.shape
        foreground_voxels = self._foreground[case]
        foreground = bool(rng.random() < p.foreground_fraction) and foreground_voxels.size > 0
        if foreground:
            flat = foreground_voxels[rng.integers(foreground_voxels.size)]
            voxel = np.unravel_index(flat, shape)
            jitter = [int(rng.integers(-(n // 4), n // 4 + 1)) for n in p.patch]
            wanted = [int(v) + j for v, j in zip(voxel, jitter, strict=True)]
        else:
            wanted = [int(rng.integers(dim)) for dim in shape]
        # Keep the patch inside the volume where it fits; centre it where it does not.
        centre = tuple(
            min(max(w, n // 2), dim - n + n // 2) if dim >= n else dim // 2
            for w, n, dim in zip(wanted, p.patch, shape, strict=True)
        )
        rotation, scale = np.eye(3), 1.0
        flips: tuple[int, ...] = ()
        intensity_scale, intensity_shift = 1.0, 0.0
        if p.augment:
            angles = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, size=3)
            rotation = Rotation.from_euler("zyx", angles, degrees=True).as_matrix()
            scale = float(rng.uniform(*SCALE_RANGE))
            flips = tuple(int(a) for a in np.flatnonzero(rng.random(3) < 0.5))
            intensity_scale = float(rng.uniform(*INTENSITY_SCALE_RANGE))
            intensity_shift = float(rng.uniform(-INTENSITY_SHIFT, INTENSITY_SHIFT))
        return Draw(
            case=case,
            foreground=foreground,
            centre=(centre[0], centre[1], centre[2]),
            rotation=rotation,
            scale=scale,
            flips=flips,
            intensity_scale=intensity_scale,
            intensity_shift=intensity_shift,
        )

    def patch(self, epoch: int, index: int) -> tuple[Image, Mask]:
        """The (z, y, x) image and mask patch of sample `index` in `epoch`."""
        d = self.draw(epoch, index)
        case = self.cases[d.case]
        shape = self.params.patch
        if d.scale == 1.0 and np.array_equal(d.rotation, np.eye(3)):
            # No rotation or scale: a plain crop (with zero padding) costs a copy, not an
            # interpolation, and gives the same voxels.
            start = [c - n // 2 for c, n in zip(d.centre, shape, strict=True)]
            image, mask = _crop(case.image, start, shape), _crop(case.mask, start, shape)
        else:
            # Volume coordinate = centre + scale * R @ (patch coordinate - patch centre).
            matrix = d.scale * d.rotation
            offset = np.array(d.centre, dtype=np.float64) - matrix @ (np.array(shape) // 2)
            image = affine_transform(
                case.image, matrix, offset, output_shape=shape, output=np.float32, order=1
            )
            mask = affine_transform(
                case.mask, matrix, offset, output_shape=shape, output=np.uint8, order=0
            )
        if d.flips:
            image, mask = np.flip(image, d.flips), np.flip(mask, d.flips)
        if d.intensity_scale != 1.0 or d.intensity_shift != 0.0:
            image = image * np.float32(d.intensity_scale) + np.float32(d.intensity_shift)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask)

    def batch(self, epoch: int, indices: Sequence[int]) -> tuple[Image, Mask]:
        """(n, 1, z, y, x) images and masks of the samples `indices`."""
        pairs = [self.patch(epoch, i) for i in indices]
        return (
            np.stack([im for im, _ in pairs])[:, None],
            np.stack([m for _, m in pairs])[:, None],
        )


def _crop(
    volume: npt.NDArray[np.generic], start: Sequence[int], size: Sequence[int]
) -> npt.NDArray[Any]:
    """volume[start : start + size] per axis, zeros where that reaches outside the volume."""
    out = np.zeros(tuple(size), volume.dtype)
    source = tuple(
        slice(max(s, 0), min(s + n, dim))
        for s, n, dim in zip(start, size, volume.shape, strict=True)
    )
    target = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(source, start, strict=True))
    out[target] = volume[source]
    return out
