"""Test-time mirroring: the averaged prediction of a volume's 8 mirror images does not
depend on which way round the volume came (a plain pass does)."""

from __future__ import annotations

import numpy as np
import torch

from radflow.segmentation.network import build_network
from radflow.segmentation.params import SegmentationParams
from radflow.segmentation.sliding import mirrored_probabilities, probabilities

PARAMS = SegmentationParams(channels=(4, 8), strides=(2,), patch=(16, 16, 16))


def test_mirrored_predictions_are_flip_equivariant_and_plain_ones_are_not() -> None:
    torch.manual_seed(0)
    net = build_network(PARAMS)
    image = np.random.default_rng(0).random((20, 18, 22), dtype=np.float32)
    for axes in [(0,), (1, 2), (0, 1, 2)]:
        flipped = np.ascontiguousarray(np.flip(image, axes))
        mirrored = mirrored_probabilities(net, flipped, PARAMS)
        back = np.flip(mirrored, axes)
        np.testing.assert_allclose(back, mirrored_probabilities(net, image, PARAMS), atol=1e-6)
        plain = np.flip(probabilities(net, flipped, PARAMS), axes)
        assert np.abs(plain - probabilities(net, image, PARAMS)).max() > 1e-3
    found = mirrored_probabilities(net, image, PARAMS)
    assert found.shape == image.shape and found.dtype == np.float32
    assert found.min() >= 0.0 and found.max() <= 1.0
