"""The network over a whole volume: MONAI's sliding-window inferer, patch by patch."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import torch
from monai.inferers.utils import sliding_window_inference
from torch import nn

from radflow.segmentation.params import SegmentationParams


def probabilities(
    net: nn.Module,
    image: npt.NDArray[np.float32],
    params: SegmentationParams,
    device: str | torch.device = "cpu",
) -> npt.NDArray[np.float32]:
    """(z, y, x) windowed image -> the region of interest's probability per voxel (softmax of
    the two channels), same shape. Gaussian-weighted overlapping windows of `params.patch`;
    MONAI pads a volume smaller than a patch and crops the result back."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        logits = sliding_window_inference(
            x,
            roi_size=params.patch,
            sw_batch_size=4,
            predictor=net,
            overlap=params.overlap,
            mode="gaussian",
        )
        assert isinstance(logits, torch.Tensor)
        prob = torch.softmax(logits.float(), dim=1)[0, 1]
    net.train(was_training)
    return prob.cpu().numpy()


#: Every subset of the three axes: the 8 mirror images of a volume.
_MIRRORS = [axes for n in range(4) for axes in itertools.combinations((0, 1, 2), n)]


def mirrored_probabilities(
    net: nn.Module,
    image: npt.NDArray[np.float32],
    params: SegmentationParams,
    device: str | torch.device = "cpu",
) -> npt.NDArray[np.float32]:
    """`probabilities` averaged over the volume's 8 mirror images, each flipped back: a
    lesion's edge the network is unsure of in one orientation is settled by the others.
    By hand: MONAI's test-time augmentation class works on dictionaries of MetaTensors
    with inverse transforms, a detour for flips of a plain array."""
    total = np.zeros(image.shape, dtype=np.float32)
    for axes in _MIRRORS:
        flipped = np.ascontiguousarray(np.flip(image, axes)) if axes else image
        found = probabilities(net, flipped, params, device)
        total += np.flip(found, axes) if axes else found
    total /= np.float32(len(_MIRRORS))
    return total
