"""A trained segmentation model as the lake stores it: settings, grid spacing and weights."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch
from torch import nn

from radflow.segmentation.network import build_network
from radflow.segmentation.params import SegmentationParams

#: What a model saved before a setting existed was trained with.
_BEFORE_THE_SETTING: dict[str, object] = {"texture_channel": False}


@dataclass(frozen=True)
class SegmentationModel:
    """`spacing_mm` is the isotropic grid it was trained on (z, y, x all equal); inference
    resamples a study onto it."""

    params: SegmentationParams
    spacing_mm: tuple[float, float, float]
    state: dict[str, torch.Tensor] = field(repr=False)

    def network(self, device: str | torch.device = "cpu") -> nn.Module:
        net = build_network(self.params)
        net.load_state_dict(self.state)
        return net.to(device).eval()

    def to_bytes(self) -> bytes:
        """torch.save of plain types and tensors only, so `from_bytes` loads it with
        `weights_only=True` (no pickle code runs when a model is read)."""
        buffer = io.BytesIO()
        torch.save(
            {
                "params": self.params.model_dump(mode="json"),
                "spacing_mm": list(self.spacing_mm),
                "state": {k: v.detach().cpu() for k, v in self.state.items()},
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentationModel:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        spacing = tuple(float(s) for s in saved["spacing_mm"])
        # Settings added since a model was saved take the value it was trained with, not
        # today's default (a lake's champion from before the texture channel has none).
        params = {**_BEFORE_THE_SETTING, **saved["params"]}
        return cls(
            params=SegmentationParams.model_validate(params),
            spacing_mm=(spacing[0], spacing[1], spacing[2]),
            state=dict(saved["state"]),
        )
