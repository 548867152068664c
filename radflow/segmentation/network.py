"""The network and the intensity scale it reads."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from monai.networks.nets.unet import UNet
from torch import nn
from torch.nn import functional as F

from radflow.segmentation.params import SegmentationParams


def build_network(params: SegmentationParams) -> nn.Module:
    """MONAI's residual U-Net: the windowed CT in (with `texture_channel`, behind
    `WithLocalDeviation`, which adds its local deviation as a second channel), two output
    channels (background, region of interest). Instance norm, not batch norm: a sample's
    output never depends on its batch-mates, so a data-parallel shard trains as the whole
    batch would."""
    if len(params.strides) != len(params.channels) - 1:
        raise ValueError("need one stride between each pair of channel levels")
    unet = UNet(
        spatial_dims=3,
        in_channels=2 if params.texture_channel else 1,
        out_channels=2,
        channels=params.channels,
        strides=params.strides,
        num_res_units=params.residual_units,
        norm="instance",
    )
    return WithLocalDeviation(unet) if params.texture_channel else unet


class WithLocalDeviation(nn.Module):
    """`net` reading the windowed CT and its local standard deviation (3x3x3 voxels).

    A lesion of the body's mean HU that differs only in its texture (the demo's heterogeneous
    soft-tissue lesions: 30-40 HU, twice the body's noise) is then one contrast away, where
    a small network trained for a minute on a dozen studies did not learn the squared
    differences itself. No weights: the channel is computed, so the model's inputs stay one
    windowed image everywhere (patches, sliding windows, mirroring)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Explicitly float32 whatever the caller's autocast or input dtype: E[x^2] - E[x]^2
        # of a 0.07 deviation would cancel badly in fp16.
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            mean = F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
            square = F.avg_pool3d(x * x, 3, stride=1, padding=1, count_include_pad=False)
            deviation = torch.sqrt(torch.clamp(square - mean * mean, min=0.0) + 1e-6)
            both = torch.cat([x, deviation], dim=1)
        out: torch.Tensor = self.net(both)
        return out


def window(hu: npt.NDArray[np.generic], params: SegmentationParams) -> npt.NDArray[np.float32]:
    """Hounsfield units to [0, 1] through the model's window (float32 arithmetic)."""
    lo = np.float32(params.window_level - params.window_width / 2)
    scaled = (np.asarray(hu, dtype=np.float32) - lo) / np.float32(params.window_width)
    return np.clip(scaled, 0.0, 1.0, out=scaled)
