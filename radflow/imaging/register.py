"""Rigid registration of a study's secondary series onto its primary."""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk


@dataclass(frozen=True)
class Registration:
    """Maps fixed physical points to moving physical points (ITK's convention)."""

    transform: sitk.Transform
    metric: float
    iterations: int


def rigid_register(fixed: sitk.Image, moving: sitk.Image, seed: int = 1) -> Registration:
    """Euler3D, Mattes mutual information, centred initialisation, 2-level pyramid.

    Regular-step gradient descent: plain gradient descent with notebook settings stops
    after a handful of iterations on CT (see DESIGN §8).
    """
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed_f, moving_f, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.25, seed)  # seed 0 would mean "wall clock" in ITK
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    reg.SetNumberOfThreads(1)
    transform = reg.Execute(fixed_f, moving_f)
    # Multi-threaded metric sums differ in the last bits from run to run; rounding to 1e-9
    # (nanometres, nanoradians) makes outputs byte-identical across runs at no cost in accuracy.
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(transform).GetBackTransform())
    euler.SetParameters([round(p, 9) for p in euler.GetParameters()])
    euler.SetFixedParameters([round(p, 9) for p in euler.GetFixedParameters()])
    return Registration(euler, round(reg.GetMetricValue(), 6), int(reg.GetOptimizerIteration()))


def resample_onto(moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    return sitk.Resample(moving, fixed, transform, sitk.sitkLinear, -1000.0, moving.GetPixelID())
