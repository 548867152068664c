"""radflow's registration before it built its own pyramid (commit 382feb5), kept for the
side-by-side in `imaging_bench.py --realistic`: one ITK method with a 3-level pyramid
(shrink 4, 2, 1 with Gaussian smoothing of half the shrink, in voxels) that ITK builds from
the 2 mm working copies at every level. Same metric, optimiser, seed and single thread.
"""

from __future__ import annotations

import math

import SimpleITK as sitk

from radflow.imaging.register import (
    MAX_SAMPLES,
    MIN_SAMPLES,
    WORKING_SPACING_MM,
    Kind,
    Registration,
    _one_thread,
    _rounded,
    working_copy,
)


def _method(fixed: sitk.Image, levels: int, seed: int) -> sitk.ImageRegistrationMethod:
    """Mattes MI, regular-step gradient descent, a `levels`-deep pyramid (shrink 2^l ... 1).

    Regular-step gradient descent: plain gradient descent with notebook settings stops after
    a handful of iterations on CT (DESIGN §8). Smoothing sigmas are half the shrink factor in
    voxels, the usual anti-aliasing rule for a shrink: in voxels, so each axis is smoothed in
    proportion to its own spacing, as the shrink (also in voxels) is applied.
    """
    shrinks = [2**level for level in reversed(range(levels))]
    voxels = [math.prod(math.ceil(n / f) for n in fixed.GetSize()) for f in shrinks]
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(  # seed 0 would mean "wall clock" in ITK
        [min(1.0, max(MIN_SAMPLES, min(n / 4, MAX_SAMPLES)) / n) for n in voxels], seed
    )
    # ITK would otherwise filter a gradient image of the whole (unshrunk) moving image at
    # every level, about 1.5 s each for a 128³ working copy; a central difference at each
    # sample costs far less at these sample counts.
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrinks)
    reg.SetSmoothingSigmasPerLevel([f / 2 if f > 1 else 0.0 for f in shrinks])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetNumberOfThreads(1)  # see _one_thread
    return reg


def _run(
    reg: sitk.ImageRegistrationMethod,
    fixed: sitk.Image,
    moving: sitk.Image,
    initial: sitk.Transform,
) -> tuple[sitk.Transform, float, int]:
    """Execute `reg` from `initial`; the optimised transform, final metric, iterations."""
    count = [0]

    def tick() -> None:
        count[0] += 1

    reg.AddCommand(sitk.sitkIterationEvent, tick)
    reg.SetInitialTransform(initial, inPlace=False)
    with _one_thread():
        out = reg.Execute(fixed, moving)
    reg.RemoveAllCommands()
    # Execute wraps the result in a composite; the optimised transform is its last entry.
    return sitk.CompositeTransform(out).GetBackTransform(), reg.GetMetricValue(), count[0]


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
    fixed_w = working_copy(fixed, working_spacing_mm)
    moving_w = working_copy(moving, working_spacing_mm)
    initial = sitk.CenteredTransformInitializer(
        fixed_w, moving_w, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = _method(fixed_w, levels, seed)
    found, metric, iterations = _run(reg, fixed_w, moving_w, initial)
    rigid = sitk.Euler3DTransform(found)
    _rounded(rigid)
    if kind == "rigid":
        return Registration(rigid, round(metric, 6), iterations, "rigid")

    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    found, metric, more = _run(reg, fixed_w, moving_w, affine)
    result = sitk.AffineTransform(found)
    _rounded(result)
    return Registration(result, round(metric, 6), iterations + more, "affine")
