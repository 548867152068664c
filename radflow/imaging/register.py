"""Rigid and affine registration of a study's secondary series onto its primary.

Every result maps fixed physical points to moving physical points (ITK's convention), so it
can be applied to the full-resolution moving image whatever resolution it was estimated at.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import SimpleITK as sitk

Kind = Literal["rigid", "affine"]

# Registration is estimated on copies of at most this spacing: finer voxels add samples, not
# information the metric can use. A 256 x 256 x 128 CT pair (1 x 1 x 2 mm) registers in 3.9 s
# instead of 8.0 s at full resolution, TRE 0.11 mm against 0.07 mm (bench/RESULTS.md).
WORKING_SPACING_MM = 2.0
# Mattes MI samples per pyramid level: a quarter of the voxels, kept within these bounds. The
# 32 x 32 joint histogram needs a few thousand samples (with a quarter of a tiny coarse level,
# 2 of 60 random 15° motions of nibabel's 33 x 41 x 25 MRI failed; with 5000, none), and
# more than ~20 per bin only cost time (about 2 µs a sample per iteration): a large image
# registers about as fast as a small one.
MIN_SAMPLES = 5_000
MAX_SAMPLES = 20_000
# The optimiser stops once a step would be under a micrometre, far below the spread of TRE
# over sampling seeds (0.04-0.09 mm on a 512 x 512 x 300 pair). 1e-4 mm took 10-20 % longer
# for the same TRE; 5e-3 stopped some of the 2 mm MRI test motions early (TRE 1.2 mm), see
# bench/RESULTS.md.
MIN_STEP_MM = 1e-3


@dataclass(frozen=True)
class Registration:
    """Maps fixed physical points to moving physical points (ITK's convention).

    `metric` is the final Mattes MI value (more negative is better); `iterations` counts
    optimiser iterations over every level (and both stages for an affine).
    """

    transform: sitk.Transform
    metric: float
    iterations: int
    kind: Kind = "rigid"


def working_copy(image: sitk.Image, spacing_mm: float | None) -> sitk.Image:
    """`image` as float32, box-averaged down to at most `spacing_mm` per axis (None: as is).

    BinShrink averages whole bins, so it anti-aliases for free and keeps the physical
    geometry exact (ITK moves the origin to the bin centres); an axis already coarser than
    `spacing_mm` is left alone, so the copy is never coarser than the bar.
    """
    # The reader gives float32, and Cast copies even to an image's own type (0.08 s at
    # 512 x 512 x 300).
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    if spacing_mm is None:
        return image
    factors = [max(1, math.floor(spacing_mm / s + 1e-6)) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def pyramid(image: sitk.Image, spacing_mm: float | None, levels: int) -> list[sitk.Image]:
    """`levels` box-averaged copies of `image`, coarsest first, the finest its working copy.

    Level l (counted from the finest) is at most `spacing_mm` x 2^l per axis (2, 4, 8 mm by
    default; with None, the native spacing x 2^l), BinShrunk from the working copy. Built
    here rather than by ITK's method, which at every level Gaussian-smooths both whole
    working copies on one thread: a box-averaged copy is anti-aliased already and a few
    times smaller at each level, and its geometry is exact. A 512 x 512 x 300 CT pair
    registers 2.7-4.0 times faster, TRE 0.05 mm (bench/RESULTS.md).
    """
    finest = working_copy(image, spacing_mm)
    copies = [finest]
    for level in range(1, levels):
        if spacing_mm is None:
            factors = [2**level] * 3
        else:
            bar = spacing_mm * 2**level
            factors = [max(1, math.floor(bar / s + 1e-6)) for s in finest.GetSpacing()]
        copies.append(sitk.BinShrink(finest, factors) if max(factors) > 1 else finest)
    return copies[::-1]


def _method(fixed: sitk.Image, seed: int, learning_rate: float) -> sitk.ImageRegistrationMethod:
    """Mattes MI and regular-step gradient descent on one pyramid level, as given.

    Regular-step gradient descent: plain gradient descent with notebook settings stops after
    a handful of iterations on CT (DESIGN §8). No shrink or smoothing of its own: the
    pyramid's copies are handed over level by level.
    """
    voxels = fixed.GetNumberOfPixels()
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(  # seed 0 would mean "wall clock" in ITK
        min(1.0, max(MIN_SAMPLES, min(voxels / 4, MAX_SAMPLES)) / voxels), seed
    )
    # ITK would otherwise filter a gradient image of the whole moving image at every level,
    # about 1.5 s each for a 128³ working copy; a central difference at each sample costs
    # far less at these sample counts.
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate,
        minStep=MIN_STEP_MM,
        numberOfIterations=200,
        relaxationFactor=0.5,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetNumberOfThreads(1)  # see _one_thread
    return reg


# How many registrations run now (one per task thread), and ITK's default before the first.
_single_threaded = {"users": 0, "before": 0}
_single_threaded_lock = threading.Lock()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Every ITK object created meanwhile runs on one thread.

    ITK's Mattes metric merges per-thread joint histograms in whichever order the threads
    finish, so with several threads its sums, and through the optimiser's path the result,
    differ in the last bits from run to run (measured: about 1 run in 3 here, also after
    rounding). The method's own SetNumberOfThreads does not reach the metric's threader,
    which takes the process-wide default when it is created inside Execute. The default is
    process-wide: ITK filters that other Python threads create meanwhile get one thread too.
    Two studies register at once on a flow's task threads, so the first in sets it and the
    last out restores it: a registration that restored it while another was between pyramid
    levels let that one's next level run on every thread (a killed-and-resumed ingest then
    wrote a transform that differed from a clean run's in the seventh digit).
    """
    with _single_threaded_lock:
        if _single_threaded["users"] == 0:
            _single_threaded["before"] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _single_threaded["users"] += 1
    try:
        yield
    finally:
        with _single_threaded_lock:
            _single_threaded["users"] -= 1
            if _single_threaded["users"] == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_single_threaded["before"])


def _run(
    fixed: list[sitk.Image],
    moving: list[sitk.Image],
    initial: sitk.Transform,
    seed: int,
) -> tuple[sitk.Transform, float, int]:
    """Optimise level by level, coarsest first, each level from the previous one's result;
    the optimised transform, the final level's metric, iterations over all levels.

    The first step halves from level to level (2 mm on the coarsest), as the voxels do: a
    level that starts near its optimum does not leap 2 mm away from it first (on 256 x 256 x
    128 CT pairs, 10-30 % fewer iterations, TRE the same or lower).
    """
    transform, metric, iterations = initial, 0.0, 0
    for level, (fixed_level, moving_level) in enumerate(zip(fixed, moving, strict=True)):
        reg = _method(fixed_level, seed, learning_rate=2.0 / 2**level)
        reg.SetInitialTransform(transform, inPlace=False)
        # No Python command on the iteration event: each call waits for the GIL, up to the
        # 5 ms switch interval while a stage on another task thread holds it (60 iterations
        # of a 128 x 128 x 100 level beside a busy Python thread: 1.8-2.8 times their time
        # alone with one, 0.95-1.02 without; bench/register_beside_python.py).
        with _one_thread():
            out = reg.Execute(fixed_level, moving_level)
        iterations += reg.GetOptimizerIteration()
        metric = reg.GetMetricValue()
        # Execute wraps the result in a composite; the optimised transform is its last entry.
        transform = sitk.CompositeTransform(out).GetBackTransform()
    return transform, metric, iterations


def _rounded(transform: sitk.Transform) -> None:
    """Round parameters to 1e-9 (nanometres, nanoradians) in place.

    Belt and braces with the single thread: a last-bit difference (another maths library)
    mostly disappears, and the written transform is short and readable, at no cost in
    accuracy.
    """
    transform.SetParameters([round(p, 9) for p in transform.GetParameters()])
    transform.SetFixedParameters([round(p, 9) for p in transform.GetFixedParameters()])


def register(
    fixed: sitk.Image,
    moving: sitk.Image,
    kind: Kind = "rigid",
    levels: int = 3,
    seed: int = 1,
    working_spacing_mm: float | None = WORKING_SPACING_MM,
) -> Registration:
    """Register `moving` onto `fixed`: Euler3D from a centred start, then (affine) 12 dof.

    The affine stage starts from the rigid result, so its extra freedom (scale, shear) only
    refines an alignment that is already right, and cannot trade rotation for shear early on.
    """
    if levels < 1:
        raise ValueError("levels must be >= 1")
    fixed_p = pyramid(fixed, working_spacing_mm, levels)
    moving_p = pyramid(moving, working_spacing_mm, levels)
    initial = sitk.CenteredTransformInitializer(
        fixed_p[-1],
        moving_p[-1],
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    found, metric, iterations = _run(fixed_p, moving_p, initial, seed)
    rigid = sitk.Euler3DTransform(found)
    _rounded(rigid)
    if kind == "rigid":
        return Registration(rigid, round(metric, 6), iterations, "rigid")

    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    found, metric, more = _run(fixed_p, moving_p, affine, seed)
    result = sitk.AffineTransform(found)
    _rounded(result)
    return Registration(result, round(metric, 6), iterations + more, "affine")


def rigid_register(fixed: sitk.Image, moving: sitk.Image, seed: int = 1) -> Registration:
    """Rigid registration with the defaults (the preprocess stage's call)."""
    return register(fixed, moving, "rigid", seed=seed)


def write_transform(reg: Registration, path: Path | str) -> Path:
    """Write the transform as ITK reads it back (.tfm text or .h5, by suffix)."""
    path = Path(path)
    sitk.WriteTransform(reg.transform, str(path))
    return path


def resample_onto(moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    return sitk.Resample(moving, fixed, transform, sitk.sitkLinear, -1000.0, moving.GetPixelID())
