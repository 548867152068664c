"""Segmentation training throughput on the CPU: radflow's `train_segmentation` against MONAI's
reference training loop, side by side in one run.

Usage: python bench/seg_train_bench.py [--volumes 8] [--size 96] [--patch 32] [--steps 12]
       [--repeats 3] [--workers 0] [--threads N] [--device cpu|cuda]
       [--quick]

Both loops train the same network (`build_network` of radflow's default `SegmentationParams`:
MONAI's residual U-Net, 8/16/32/64 channels, instance norm) with MONAI's DiceCELoss and
AdamW on batches of 4 patches of `--patch`³ cut from the same synthetic `--size`³ volumes
(a bright sphere of radius 8-20 voxels in noise), 67 % of patches centred on the sphere:

- radflow: `train_segmentation(..., epochs=1, samples_per_epoch=4 * steps)`, no validation,
  no checkpoint: patches from `PatchSampler` (seeded per sample; one scipy affine resample for
  crop, rotation and scale; flips and intensity in numpy);
- MONAI: the loop of MONAI's 3-D segmentation tutorials: `monai.data.Dataset` +
  `DataLoader` (batch 1 volume, `--workers` workers), `RandCropByPosNegLabeld(pos=0.67,
  neg=0.33, num_samples=4)` and, when augmenting, `RandFlipd` per axis, `RandAffined`
  (±10°, scale ±10 %), `RandScaleIntensityd(0.1)`, `RandShiftIntensityd(0.05)`; then
  forward, DiceCELoss, backward, AdamW step.

Figures are the best of `--repeats` rounds (each round runs every loop once, so load from other
users hits all alike), after two untimed warm-up steps per loop. patches/s counts training
patches; volumes/s counts training volumes as MONAI's tutorials do, a volume being one item of
the dataset cut into num_samples = 4 patches (so volumes/s = patches/s / 4 for both loops).
"data only" times producing the same patches without the network (on the CPU whatever
`--device`). With `--device cuda` both loops train on the GPU with float16 autocast and a
GradScaler. "radflow ×" is radflow's figure over MONAI's (> 1: radflow faster). Prints
Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai.data import DataLoader, Dataset  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.transforms import (  # noqa: E402
    Compose,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from radflow.segmentation.network import build_network  # noqa: E402
from radflow.segmentation.params import SegmentationParams  # noqa: E402
from radflow.segmentation.patches import Case, PatchSampler  # noqa: E402
from radflow.segmentation.train import train_segmentation  # noqa: E402

BATCH = 4  # patches per step in both loops (MONAI: 1 volume x num_samples 4)


def sphere_volumes(n: int, size: int) -> list[Case]:
    rng = np.random.default_rng(0)
    grid = np.indices((size,) * 3, dtype=np.float32)
    cases = []
    for i in range(n):
        centre = rng.uniform(0.3 * size, 0.7 * size, 3).astype(np.float32)
        radius = rng.uniform(8, 20)
        mask = (((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2).astype(np.uint8)
        noise = rng.normal(0, 0.1, mask.shape)
        image = np.clip(0.3 + 0.4 * mask + noise, 0, 1).astype(np.float32)
        cases.append(Case(f"bench-{i}", image, mask))
    return cases


def radflow_train(cases: list[Case], params: SegmentationParams, steps: int) -> None:
    run = params.model_copy(update={"epochs": 1, "samples_per_epoch": BATCH * steps})
    train_segmentation(cases, [], run, spacing_mm=(1.0, 1.0, 1.0), seed=0)


def radflow_data(cases: list[Case], params: SegmentationParams, steps: int) -> None:
    sampler = PatchSampler(cases, params, seed=0)
    for step in range(steps):
        sampler.batch(1, range(step * BATCH, (step + 1) * BATCH))


def monai_loader(cases: list[Case], params: SegmentationParams, workers: int) -> DataLoader:
    keys = ["image", "label"]
    transforms: list[Any] = [
        RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=params.patch,
            pos=params.foreground_fraction,
            neg=1 - params.foreground_fraction,
            num_samples=BATCH,
        )
    ]
    if params.augment:
        transforms += [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
        transforms += [
            RandAffined(
                keys=keys,
                prob=1.0,
                rotate_range=(np.pi / 18,) * 3,
                scale_range=(0.1,) * 3,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=0.05, prob=1.0),
        ]
    pipeline = Compose(transforms)
    pipeline.set_random_state(seed=0)
    data = [{"image": c.image[None], "label": c.mask[None].astype(np.float32)} for c in cases]
    return DataLoader(Dataset(data, pipeline), batch_size=1, shuffle=True, num_workers=workers)


def batches(loader: DataLoader, steps: int) -> Iterator[dict[str, torch.Tensor]]:
    done = 0
    while True:
        for batch in loader:
            if done == steps:
                return
            yield batch
            done += 1


def monai_train(loader: DataLoader, params: SegmentationParams, steps: int) -> None:
    """MONAI's tutorial step; on CUDA with float16 autocast and a GradScaler, as radflow."""
    device = "cuda" if params.device == "cuda" else "cpu"
    amp = device == "cuda"
    torch.manual_seed(0)
    net = build_network(params).to(device)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    scaler = torch.amp.GradScaler(device, enabled=amp)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    for batch in batches(loader, steps):
        optimizer.zero_grad(set_to_none=True)
        image, label = batch["image"].to(device), batch["label"].to(device)
        with torch.autocast(device, dtype=torch.float16, enabled=amp):
            logits = net(image)
        loss = loss_fn(logits.float(), label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if amp:
        torch.cuda.synchronize()


def monai_data(loader: DataLoader, steps: int) -> None:
    for _ in batches(loader, steps):
        pass


def best_seconds(loops: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(repeats):
        for name, loop in loops.items():
            gc.collect()
            t0 = time.perf_counter()
            loop()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--size", type=int, default=96, help="volume edge (voxels)")
    parser.add_argument("--patch", type=int, default=32, help="patch edge (multiple of 8)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per loop and round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="MONAI DataLoader workers")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: its own)"
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="cuda: float16 autocast"
    )
    parser.add_argument("--quick", action="store_true", help="2 steps, 1 round, 4 volumes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.repeats, args.volumes = 2, 1, 4

    cases = sphere_volumes(args.volumes, args.size)
    base = SegmentationParams(patch=(args.patch,) * 3, batch_size=BATCH, device=args.device)
    print(
        f"torch {torch.__version__}, MONAI {version('monai')}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}"
        + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else "")
        + f"; device {args.device}; {args.volumes} volumes of {args.size}³, patches "
        f"{args.patch}³, batch {BATCH}, U-Net {list(base.channels)}; best of {args.repeats} "
        f"rounds of {args.steps} steps; MONAI DataLoader workers {args.workers}\n"
    )
    columns = ["augmentation", "loop", "train patches/s", "train volumes/s", "radflow ×"]
    columns += ["data only patches/s", "radflow ×"]
    print("| " + " | ".join(columns) + " |")
    print("| --- | --- |" + " ---: |" * 5)
    for augment in (True, False):
        params = base.model_copy(update={"augment": augment})
        loader = monai_loader(cases, params, args.workers)
        # Warm-up: first calls build oneDNN kernels and the loader's iterator.
        radflow_train(cases, params, 2)
        monai_train(loader, params, 2)
        train = best_seconds(
            {
                "radflow": partial(radflow_train, cases, params, args.steps),
                "MONAI": partial(monai_train, loader, params, args.steps),
            },
            args.repeats,
        )
        data = best_seconds(
            {
                "radflow": partial(radflow_data, cases, params, args.steps),
                "MONAI": partial(monai_data, loader, args.steps),
            },
            args.repeats,
        )
        patches = BATCH * args.steps
        for name in ("radflow", "MONAI"):
            rate, data_rate = patches / train[name], patches / data[name]
            print(
                f"| {'yes' if augment else 'crop only'} | {name} | {rate:.2f} | "
                f"{rate / BATCH:.2f} | {train['MONAI'] / train[name]:.2f} | "
                f"{data_rate:.1f} | {data['MONAI'] / data[name]:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
