"""The network and the intensity scale it reads."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from monai.networks.nets.unet import UNet
from torch import nn

from radflow.segmentation.params import SegmentationParams


def build_network(params: SegmentationParams) -> nn.Module:
    """MONAI's residual U-Net: one input channel (windowed CT), two output channels
    (background, region of interest). Instance norm, not batch norm: a sample's output never
    depends on its batch-mates, so a data-parallel shard trains as the whole batch would."""
    if len(params.strides) != len(params.channels) - 1:
        raise ValueError("need one stride between each pair of channel levels")
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=params.channels,
        strides=params.strides,
        num_res_units=params.residual_units,
        norm="instance",
    )


def window(hu: npt.NDArray[np.generic], params: SegmentationParams) -> npt.NDArray[np.float32]:
    """Hounsfield units to [0, 1] through the model's window (float32 arithmetic)."""
    lo = np.float32(params.window_level - params.window_width / 2)
    scaled = (np.asarray(hu, dtype=np.float32) - lo) / np.float32(params.window_width)
    return np.clip(scaled, 0.0, 1.0, out=scaled)
