"""Bright noisy spheres to segment, and settings small enough for a test on a shared CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from radflow.segmentation.params import SegmentationParams
from radflow.segmentation.patches import Case

# The mechanics, not the model's quality: a 3-level U-Net of 4/8/16 channels on 16³ patches.
TINY = SegmentationParams(
    channels=(4, 8, 16),
    strides=(2, 2),
    patch=(16, 16, 16),
    epochs=3,
    samples_per_epoch=8,
    batch_size=4,
    learning_rate=1e-2,
    device="cpu",
)
SPACING = (1.0, 1.0, 1.0)


def sphere_case(seed: int, size: int = 24) -> Case:
    """One sphere (radius 3-5 voxels) 0.4 brighter than a noisy background, and its mask."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(8, size - 8, 3)
    radius = rng.uniform(3, 5)
    grid = np.indices((size,) * 3, dtype=np.float64)
    mask = (((grid - centre[:, None, None, None]) ** 2).sum(0) < radius**2).astype(np.uint8)
    image = np.clip(0.3 + 0.4 * mask + rng.normal(0, 0.1, mask.shape), 0, 1).astype(np.float32)
    return Case(f"sphere-{seed}", image, mask)


def training_spheres() -> tuple[list[Case], list[Case]]:
    """The training tests' cases: three spheres to train on, two to validate on."""
    return [sphere_case(seed) for seed in range(3)], [sphere_case(seed) for seed in (10, 11)]


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Two cores shared by several processes: one thread each is faster than contention, and
    the tests compare runs made under the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


HEAVY_MODULES = ("prefect", "pytest", "_pytest", "boto3", "radflow.cli", "radflow.config")


def fail_in_process_1(rank: int, epoch: int) -> None:
    """An `_after_epoch` hook for spawned processes (importable without pytest): fails rank
    1, and says which heavy modules that process had imported (it should have none)."""
    import sys

    if rank == 1:
        loaded = [m for m in HEAVY_MODULES if m in sys.modules]
        raise RuntimeError(f"test failure in rank {rank} after epoch {epoch}; loaded {loaded}")


def mark_the_exit(rank: int, world: int, folder: Path) -> None:
    """A `launch` target that says it ran, and would say so again at the interpreter's exit."""
    import atexit

    (folder / f"ran-{rank}").touch()
    atexit.register((folder / f"finalised-{rank}").touch)
