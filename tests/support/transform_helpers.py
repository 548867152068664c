"""Transform helpers shared by the registration tests: apply, compare, build rotations."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

Points = npt.NDArray[np.float64]  # (n, 3) physical points, x y z


def apply(transform: sitk.Transform, points: Points) -> Points:
    """An affine (here rigid) sitk transform applied to many points at once.

    Any affine map is fixed by the images of the origin and the three unit vectors; one
    point is checked against TransformPoint so a non-affine transform would be caught.
    """
    b = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    m = np.stack([np.array(transform.TransformPoint(tuple(e))) - b for e in np.eye(3)], axis=1)
    probe = points[len(points) // 2]
    assert np.allclose(transform.TransformPoint(tuple(probe)), m @ probe + b, atol=1e-6)
    mapped: Points = points @ m.T + b
    return mapped


def tre(estimate: sitk.Transform, truth: sitk.Transform, points: Points) -> float:
    return float(np.linalg.norm(apply(estimate, points) - apply(truth, points), axis=1).mean())


def rotation(axis: tuple[float, float, float], degrees: float) -> npt.NDArray[np.float64]:
    """Rodrigues' formula: rotation by `degrees` about the unit vector along `axis`."""
    u = np.array(axis, dtype=np.float64)
    u /= np.linalg.norm(u)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    a = np.deg2rad(degrees)
    rot: npt.NDArray[np.float64] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)
    return rot
