"""CNN training and inference throughput: radflow's ResNet3D against MONAI's 3-D ResNets.

Usage: python bench/cnn_bench.py [--sizes 40 64] [--batch-size 8] [--batches 5] [--repeats 3]
       [--warmup 2] [--devices cpu cuda]

One run, the same input for every model: a batch of `--batch-size` random (N, 1, S, S, S)
float32 volumes in [0, 1] and random 0/1 labels per size S. Models, each with one logit:

- radflow: `ResNet3D(width=8)` (stride-2 stem, one basic block per stage at 8/16/32 channels,
  GroupNorm), what `CNNClassifier` trains;
- MONAI resnet10: `resnet10(spatial_dims=3, n_input_channels=1, num_classes=1)` (7³ stem at
  full resolution, max-pool, one basic block per stage at 64/128/256/512 channels, BatchNorm);
- MONAI resnet10 narrow: MONAI's `ResNet` with the same layout at 8/16/32/64 channels, to
  separate the architecture from the width.

Training is what `CNNClassifier.fit` does per batch: forward, BCEWithLogitsLoss, backward,
AdamW step (float16 autocast and a GradScaler on CUDA). Inference is a forward pass in eval
mode under `torch.inference_mode` (autocast on CUDA). `--warmup` steps precede each timing,
then `--batches` steps are timed; the figure is the best of `--repeats` rounds, each round
running every model once, so load changes from other users hit all models alike. volumes/s is
batch size × batches over that time; "radflow ×" is radflow's volumes/s over the model's
(> 1: radflow faster). torch's own thread settings are used. Prints Markdown for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radflow.models.cnn import ResNet3D  # noqa: E402

RADFLOW = "radflow ResNet3D(width=8)"


def models() -> list[tuple[str, Callable[[], nn.Module]]]:
    """(name, builder) pairs; MONAI's are left out with a note when it is not installed."""
    found: list[tuple[str, Callable[[], nn.Module]]] = [(RADFLOW, lambda: ResNet3D(width=8))]
    try:
        from monai.networks.nets import ResNet, resnet10
    except ImportError:
        print("MONAI: not installed, its models skipped")
        return found
    found.append(
        (
            "MONAI resnet10",
            lambda: resnet10(spatial_dims=3, n_input_channels=1, num_classes=1),
        )
    )
    found.append(
        (
            "MONAI resnet10 narrow (8/16/32/64)",
            lambda: ResNet(
                block="basic",
                layers=[1, 1, 1, 1],
                block_inplanes=[8, 16, 32, 64],
                spatial_dims=3,
                n_input_channels=1,
                num_classes=1,
            ),
        )
    )
    return found


@dataclass
class Timer:
    """One model on one device and input: a training step and an inference step."""

    module: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    device: str

    def __post_init__(self) -> None:
        self.amp = self.device == "cuda"
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=1e-3, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(self.device, enabled=self.amp)
        self.loss_fn = nn.BCEWithLogitsLoss()

    def train_step(self) -> None:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.float16, enabled=self.amp):
            loss = self.loss_fn(self.module(self.x).reshape(-1), self.y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def infer_step(self) -> None:
        self.module.eval()
        with (
            torch.inference_mode(),
            torch.autocast(self.device, dtype=torch.float16, enabled=self.amp),
        ):
            self.module(self.x)

    def seconds(self, step: Callable[[], None], warmup: int, batches: int) -> float:
        for _ in range(warmup):
            step()
        self.sync()
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(batches):
            step()
        self.sync()
        return time.perf_counter() - t0

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


@dataclass
class Row:
    device: str
    size: int
    name: str
    params: int
    train: float  # volumes/s
    infer: float  # volumes/s


def measure(
    builders: list[tuple[str, Callable[[], nn.Module]]],
    device: str,
    size: int,
    batch: int,
    batches: int,
    repeats: int,
    warmup: int,
) -> list[Row]:
    generator = torch.Generator().manual_seed(size)
    x = torch.rand(batch, 1, size, size, size, generator=generator).to(device)
    y = torch.randint(0, 2, (batch,), generator=generator).float().to(device)
    timers = {}
    for name, build in builders:
        torch.manual_seed(0)
        timers[name] = Timer(build().to(device), x, y, device)
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            best[name][0] = min(best[name][0], timer.seconds(timer.train_step, warmup, batches))
            best[name][1] = min(best[name][1], timer.seconds(timer.infer_step, warmup, batches))
    return [
        Row(
            device,
            size,
            name,
            sum(p.numel() for p in timer.module.parameters()),
            batch * batches / best[name][0],
            batch * batches / best[name][1],
        )
        for name, timer in timers.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 64], help="cube edges")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda")
    args = parser.parse_args()
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]

    builders = models()
    monai = version("monai") if len(builders) > 1 else "not installed"
    print(
        f"torch {torch.__version__}, MONAI {monai}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
        + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else "")
    )
    print(
        f"\nBatch {args.batch_size}; best of {args.repeats} rounds of {args.batches} timed steps "
        f"after {args.warmup} warm-up steps; train = forward + backward + AdamW step"
        f"{' (CUDA: float16 autocast + GradScaler)' if 'cuda' in devices else ''}.\n"
    )
    columns = ["device", "volume", "model", "parameters"]
    columns += ["train vol/s", "radflow ×", "infer vol/s", "radflow ×"]
    print("| " + " | ".join(columns) + " |")
    print("| --- | --- | --- |" + " ---: |" * 5)
    for device in devices:
        for size in args.sizes:
            rows = measure(
                builders, device, size, args.batch_size, args.batches, args.repeats, args.warmup
            )
            ours = next(r for r in rows if r.name == RADFLOW)
            for r in rows:
                print(
                    f"| {device} | {size}³ | {r.name} | {r.params:,} | {r.train:.1f} | "
                    f"{ours.train / r.train:.2f} | {r.infer:.1f} | {ours.infer / r.infer:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
