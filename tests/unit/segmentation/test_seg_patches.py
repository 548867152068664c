"""Training patches: seeded per (seed, epoch, index), centred on the annotation as often as
asked, cut exactly without augmentation, padded where the volume is small."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import affine_transform
from support.seg_spheres import TINY, sphere_case

from radflow.segmentation.patches import Case, PatchSampler, _crop


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [sphere_case(seed, size=32) for seed in range(3)]


def test_a_patch_depends_only_on_seed_epoch_and_index(cases: list[Case]) -> None:
    a, b = PatchSampler(cases, TINY, seed=7), PatchSampler(cases, TINY, seed=7)
    # Drawn in another order by another sampler (as another process or a resumed run would).
    forward = [a.patch(2, i) for i in range(6)]
    backward = [b.patch(2, i) for i in reversed(range(6))][::-1]
    for (image, mask), (image2, mask2) in zip(forward, backward, strict=True):
        assert image.shape == (16, 16, 16) and image.dtype == np.float32
        assert mask.shape == (16, 16, 16) and mask.dtype == np.uint8
        assert np.array_equal(image, image2) and np.array_equal(mask, mask2)
    images = [im for im, _ in forward]
    assert not any(np.array_equal(images[0], im) for im in images[1:])
    assert not np.array_equal(a.patch(3, 0)[0], images[0])  # another epoch
    assert not np.array_equal(PatchSampler(cases, TINY, seed=8).patch(2, 0)[0], images[0])
    batch_images, batch_masks = a.batch(2, range(2, 5))
    assert batch_images.shape == (3, 1, 16, 16, 16) and batch_masks.shape == (3, 1, 16, 16, 16)
    assert np.array_equal(batch_images[1, 0], images[3])


@pytest.mark.parametrize("fraction", [0.0, 0.67, 1.0])
def test_the_share_of_patches_centred_on_the_annotation(cases: list[Case], fraction: float) -> None:
    params = TINY.model_copy(update={"foreground_fraction": fraction})
    sampler = PatchSampler(cases, params, seed=0)
    n = 300
    draws = [sampler.draw(1, i) for i in range(n)]
    share = sum(d.foreground for d in draws) / n
    assert share == pytest.approx(fraction, abs=0.08)
    # Every case is drawn; every patch centred on the annotation contains some of it, even
    # rotated, scaled and flipped.
    assert {d.case for d in draws} == {0, 1, 2}
    for i, d in enumerate(draws[:60]):
        if d.foreground:
            assert sampler.patch(1, i)[1].any()


def test_without_augmentation_a_patch_is_an_exact_crop(cases: list[Case]) -> None:
    sampler = PatchSampler(cases, TINY.model_copy(update={"augment": False}), seed=3)
    for i in range(10):
        d = sampler.draw(1, i)
        z, y, x = (c - 8 for c in d.centre)
        assert min(z, y, x) >= 0 and max(z, y, x) + 16 <= 32  # inside the 32³ volume
        image, mask = sampler.patch(1, i)
        case = cases[d.case]
        assert np.array_equal(image, case.image[z : z + 16, y : y + 16, x : x + 16])
        assert np.array_equal(mask, case.mask[z : z + 16, y : y + 16, x : x + 16])


def test_augmentation_changes_the_patch_but_keeps_the_annotation(cases: list[Case]) -> None:
    plain = PatchSampler(cases, TINY.model_copy(update={"augment": False}), seed=3)
    augmented = PatchSampler(cases, TINY, seed=3)
    for i in range(10):
        d, d_plain = augmented.draw(1, i), plain.draw(1, i)
        assert (d.case, d.foreground, d.centre) == (
            d_plain.case,
            d_plain.foreground,
            d_plain.centre,
        )
        assert 0.9 <= d.scale <= 1.1 and np.allclose(d.rotation @ d.rotation.T, np.eye(3))
        image, mask = augmented.patch(1, i)
        image_plain, mask_plain = plain.patch(1, i)
        assert not np.array_equal(image, image_plain)
        # A rotation of at most 10° and a scale within 10 % keep the annotated volume roughly.
        if mask_plain.sum() > 100 and d.centre == d_plain.centre:
            assert 0.5 < mask.sum() / mask_plain.sum() < 2.0


def test_a_volume_smaller_than_the_patch_is_padded_with_zeros() -> None:
    image = np.full((10, 12, 9), 0.5, np.float32)
    mask = np.zeros((10, 12, 9), np.uint8)
    mask[4:6, 5:7, 3:5] = 1
    sampler = PatchSampler(
        [Case("small", image, mask)], TINY.model_copy(update={"augment": False}), seed=0
    )
    for i in range(5):
        patch, patch_mask = sampler.patch(1, i)
        assert patch.shape == (16, 16, 16)
        assert np.count_nonzero(patch) == image.size and patch.sum() == pytest.approx(image.sum())
        assert patch_mask.sum() == mask.sum()


def test_a_case_is_checked_when_made() -> None:
    image, mask = np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(ValueError, match=r"case k: image shape \[8, 8, 8\] != mask shape"):
        Case("k", image, mask[:4])
    with pytest.raises(ValueError, match="3-D float32"):
        Case("k", image.astype(np.float64), mask)
    with pytest.raises(ValueError, match="uint8"):
        Case("k", image, mask.astype(bool))
    with pytest.raises(ValueError, match=r"windowed to \[0, 1\]"):
        Case("k", image + 40, mask)
    with pytest.raises(ValueError, match=r"windowed to \[0, 1\]"):
        Case("k", np.full_like(image, np.nan), mask)
    with pytest.raises(ValueError, match="0 or 1"):
        Case("k", image, mask + 2)
    with pytest.raises(ValueError, match="no cases"):
        PatchSampler([], TINY, seed=0)


def test_the_plain_crop_agrees_with_the_affine_resample() -> None:
    # The two code paths of `PatchSampler.patch`: a crop without augmentation, scipy's affine
    # resample with it. At the identity they must cut the same voxels, padding included.
    rng = np.random.default_rng(0)
    volume = rng.random((10, 20, 7)).astype(np.float32)
    for start in ([0, 0, 0], [-3, 5, -4], [2, 10, 1], [-8, -8, -8]):
        expected = affine_transform(
            volume, np.eye(3), np.array(start, float), output_shape=(16, 16, 16), order=1
        )
        assert np.array_equal(_crop(volume, start, (16, 16, 16)), expected)
