"""segment_image: the model's grid and back, the body crop, post-processing, volume checks, and a
small trained network finding spheres on a grid it never saw."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk
import torch
from monai.losses.dice import DiceCELoss

from radflow.segmentation.infer import AIR_HU, body_box, model_grid, segment_image
from radflow.segmentation.model import SegmentationModel
from radflow.segmentation.network import build_network, window
from radflow.segmentation.params import SegmentationParams
from radflow.segmentation.postprocess import largest_component, volume_ml, volume_problem

TISSUE_HU, LESION_HU, NOISE_HU = 40.0, 160.0, 15.0
MODEL_MM = 2.0
# A rotation about an oblique axis (the image axes are neither LPS nor a permutation of it).
_a, _b = math.radians(30), math.radians(20)
OBLIQUE = tuple(
    (
        np.array([[1, 0, 0], [0, math.cos(_b), -math.sin(_b)], [0, math.sin(_b), math.cos(_b)]])
        @ np.array([[math.cos(_a), -math.sin(_a), 0], [math.sin(_a), math.cos(_a), 0], [0, 0, 1]])
    ).ravel()
)


def _physical(image: sitk.Image) -> npt.NDArray[np.float64]:
    """Every voxel's physical point, (z, y, x, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(image.GetSize())), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(np.float64)
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    out: npt.NDArray[np.float64] = index @ matrix.T + np.array(image.GetOrigin())
    return out


def _phantom(
    size: tuple[int, int, int],
    spacing: tuple[float, float, float],
    direction: tuple[float, ...],
    lesions: list[tuple[tuple[float, float, float], float]],
    body_radius_mm: float,
    seed: int = 0,
) -> tuple[sitk.Image, list[npt.NDArray[np.bool_]]]:
    """An int16 HU image: a ball of tissue (centre at the grid's middle) in air, with lesions
    (physical offsets from the middle, radius mm); and each lesion's true (z, y, x) mask."""
    image = sitk.Image(list(size), sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin((-20.0, 15.0, 7.0))
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size]))
    points = _physical(image) - centre
    hu = np.where(np.linalg.norm(points, axis=-1) <= body_radius_mm, TISSUE_HU, AIR_HU)
    truths = []
    for offset, radius in lesions:
        inside = np.linalg.norm(points - np.array(offset), axis=-1) <= radius
        hu[inside] = LESION_HU
        truths.append(inside)
    hu += np.random.default_rng(seed).normal(0, NOISE_HU, hu.shape)
    out = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    out.CopyInformation(image)
    return out, truths


def _dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    return 2 * float(np.count_nonzero(a & b)) / (np.count_nonzero(a) + np.count_nonzero(b))


def _train(
    params: SegmentationParams, steps: int, lr: float = 1e-2, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A few hundred Adam steps (seconds) on random 24³ patches of the model grid: a ball of
    tissue in air (often cut by the patch edge), mostly with a brighter sphere inside it."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network(params)
    n = params.patch[0]
    grid = np.moveaxis(np.indices((n, n, n), dtype=np.float32), 0, -1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    # Annealed to zero, so the last steps settle instead of jumping about the threshold.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)

    def ball(radius: float, low: float, high: float, within: float) -> npt.NDArray[np.float32]:
        """`radius` voxels about a random centre, at least `within` voxels inside the patch;
        edges partial-volumed over one voxel, as a study resampled onto the model grid has."""
        distance = np.linalg.norm(grid - rng.uniform(within, n - within, 3), axis=-1)
        inside: npt.NDArray[np.float32] = np.clip(radius - distance + 0.5, 0, 1)
        return (high - low) * inside + low

    def sample() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        body = ball(rng.uniform(10, 30), AIR_HU, TISSUE_HU, -10)
        label = np.zeros((n, n, n), dtype=np.int64)
        if rng.random() < 0.8:
            lesion = ball(rng.uniform(2.5, 6), 0, LESION_HU - TISSUE_HU, 4)
            inside = (body == TISSUE_HU) & (lesion >= (LESION_HU - TISSUE_HU) / 2)
            body = np.where(body == TISSUE_HU, body + lesion, body)
            label[inside] = 1
        hu = body + rng.normal(0, NOISE_HU, body.shape)
        return window(hu, params), label

    for _ in range(steps):
        xs, ys = zip(*(sample() for _ in range(4)), strict=True)
        optimiser.zero_grad()
        loss = loss_fn(
            net(torch.from_numpy(np.stack(xs))[:, None]), torch.from_numpy(np.stack(ys))[:, None]
        )
        loss.backward()
        optimiser.step()
        schedule.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


SMALL = SegmentationParams(channels=(4, 8, 16), strides=(2, 2), patch=(24, 24, 24))


@pytest.fixture(scope="module")
def trained() -> SegmentationModel:
    return SegmentationModel(SMALL, (MODEL_MM,) * 3, _train(SMALL, steps=250))


def _random_model(params: SegmentationParams = SMALL) -> SegmentationModel:
    torch.manual_seed(1)
    return SegmentationModel(params, (MODEL_MM,) * 3, build_network(params).state_dict())


# --------------------------------------------------------------------------- grids


def test_model_grid_covers_every_voxel_centre_of_the_image() -> None:
    image = sitk.Image([10, 7, 5], sitk.sitkInt16)
    image.SetSpacing((0.7, 2.0, 2.5))
    image.SetOrigin((1.0, 2.0, 3.0))
    image.SetDirection(OBLIQUE)
    grid = model_grid(image, (1.5, 1.5, 1.5))
    # (n - 1) * s / 1.5 = 4.2, 8.0, 6.67 -> 5 + 1, 8 + 1, 7 + 1 voxels
    assert grid.size == (6, 9, 8)
    assert grid.spacing == (1.5, 1.5, 1.5)
    assert grid.origin == image.GetOrigin()
    assert grid.direction == image.GetDirection()


def test_mask_lies_exactly_on_an_oblique_anisotropic_input_grid() -> None:
    image, _ = _phantom((37, 29, 13), (0.83, 0.61, 2.3), OBLIQUE, [((0, 0, 0), 6.0)], 15.0)
    result = segment_image(_random_model(), image)
    mask = result.mask
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == image.GetSize()
    assert mask.GetOrigin() == image.GetOrigin()
    assert mask.GetSpacing() == image.GetSpacing()
    assert mask.GetDirection() == image.GetDirection()
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}


# --------------------------------------------------------------------------- body crop


def test_body_box_is_the_bounding_box_plus_the_margin_clipped_to_the_array() -> None:
    hu = np.full((20, 30, 40), AIR_HU, dtype=np.float32)
    hu[5:9, 12:20, 30:38] = TISSUE_HU
    hu[7, 25, 33] = -499.0  # just above the -500 HU body threshold
    hu[2, 2, 2] = -500.0  # not above it
    box = body_box(hu, -500.0, (3, 4, 5))
    assert box == (slice(2, 12), slice(8, 30), slice(25, 40))


def test_body_box_is_none_when_nothing_is_above_the_threshold() -> None:
    assert body_box(np.full((4, 5, 6), -900.0, dtype=np.float32), -500.0, (1, 1, 1)) is None


def test_an_all_air_image_is_empty_without_running_the_network() -> None:
    image = sitk.Image([30, 20, 10], sitk.sitkInt16) - 1000
    image.SetSpacing((0.7, 0.7, 2.0))
    image.SetDirection(OBLIQUE)
    # No weights at all: building the network would fail, so the result proves it never ran.
    model = SegmentationModel(SMALL, (MODEL_MM,) * 3, {})
    with pytest.raises(RuntimeError):
        model.network()
    result = segment_image(model, image)
    assert result.problem == "empty"
    assert (result.volume_ml, result.components) == (0.0, 0)
    assert result.mask.GetSize() == image.GetSize()
    assert result.mask.GetDirection() == image.GetDirection()
    assert not sitk.GetArrayViewFromImage(result.mask).any()


# --------------------------------------------------------------------------- post-processing


def test_largest_component_keeps_the_bigger_blob_and_counts_both() -> None:
    array = np.zeros((12, 14, 16), dtype=np.uint8)
    array[1:4, 1:4, 1:4] = 1  # 27 voxels
    array[6:10, 8:12, 9:14] = 1  # 80 voxels
    array[5, 7, 8] = 1  # touches the second only at a corner: a third component
    mask = sitk.GetImageFromArray(array)
    mask.SetSpacing((0.5, 1.0, 2.0))
    mask.SetDirection(OBLIQUE)
    kept, components = largest_component(mask)
    assert components == 3
    expected = np.zeros_like(array)
    expected[6:10, 8:12, 9:14] = 1
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(kept), expected)
    assert kept.GetDirection() == mask.GetDirection()
    assert volume_ml(kept) == pytest.approx(80 * 0.5 * 1.0 * 2.0 / 1000)


def test_largest_component_of_an_empty_mask_is_empty() -> None:
    kept, components = largest_component(sitk.Image([4, 5, 6], sitk.sitkUInt8))
    assert components == 0
    assert volume_ml(kept) == 0.0


@pytest.mark.parametrize(
    ("volume", "problem"),
    [(0.0, "empty"), (0.049, "too small"), (0.05, None), (500.0, None), (500.1, "too large")],
)
def test_volume_checks(volume: float, problem: str | None) -> None:
    assert volume_problem(volume, SegmentationParams(min_volume_ml=0.05, max_volume_ml=500)) == (
        problem
    )


def test_segment_image_reports_an_implausible_volume() -> None:
    image, _ = _phantom((40, 40, 20), (1.0, 1.0, 2.0), OBLIQUE, [((0, 0, 0), 6.0)], 15.0)
    model = _random_model(SMALL.model_copy(update={"max_volume_ml": 1e-6, "threshold": 0.01}))
    result = segment_image(model, image)
    assert result.volume_ml > 1e-6
    assert result.problem == "too large"


# --------------------------------------------------------------------------- a trained network


def test_a_sphere_is_found_on_a_grid_the_model_never_saw(trained: SegmentationModel) -> None:
    image, (truth,) = _phantom((64, 56, 36), (0.9, 1.1, 1.6), OBLIQUE, [((3, -4, 2), 9.0)], 24.0)
    result = segment_image(trained, image)
    found = sitk.GetArrayViewFromImage(result.mask).astype(bool)
    assert _dice(found, truth) >= 0.8
    assert result.problem is None
    assert result.components == 1
    voxel_ml = 0.9 * 1.1 * 1.6 / 1000  # the input's voxels, not the model's
    assert result.volume_ml == pytest.approx(np.count_nonzero(found) * voxel_ml)


def test_of_two_spheres_the_bigger_is_kept(trained: SegmentationModel) -> None:
    lesions = [((-10.0, 0.0, 0.0), 8.0), ((11.0, 0.0, 0.0), 5.0)]
    image, (big, small) = _phantom((80, 50, 30), (0.8, 1.0, 1.5), OBLIQUE, lesions, 28.0)
    result = segment_image(trained, image)
    found = sitk.GetArrayViewFromImage(result.mask).astype(bool)
    assert result.components == 2
    assert _dice(found, big) >= 0.8
    assert not (found & small).any()
