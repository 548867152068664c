"""Segmentation inference of a whole CT on the CPU: radflow's `segment_image` against MONAI's
`sliding_window_inference` used the way a MONAI user would, side by side in one run.

Usage: python bench/seg_infer_bench.py [--quick] [--size 512x512x300]

Input: a CT-like int16 volume (0.7 x 0.7 x 1 mm; bench/imaging_bench.py's phantom: an
off-centre body ellipse, lungs, spine, liver, 20 HU noise, air around), built in each
contender's own process outside its timing. Both run the same network (the default
SegmentationParams: MONAI's residual U-Net 8-16-32-64, random weights with seed 0) with the
same roi_size, overlap, sw_batch_size 4 and Gaussian blending, on a 1.5 mm grid, and return a
mask on the input grid:

- radflow: `segment_image` (SimpleITK resample, windows over the body's box only, probability
  resampled back slab by slab, largest component, volume checks);
- MONAI: the whole volume as a MetaTensor (what LoadImage + EnsureChannelFirst give: float32),
  Spacing to 1.5 mm, ScaleIntensityRange, sliding_window_inference over all of it, softmax,
  SpatialResample back onto the input's affine, AsDiscrete(threshold),
  KeepLargestConnectedComponent.

Each contender runs in its own subprocess: seconds of one call (after a warm-up call on a small
volume), and memory as the peak resident set during the call above the resident set before it
(Linux VmHWM, reset through /proc/self/clear_refs). Agreement: Dice of the two masks within
the body (HU > -500). Prints Markdown.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from imaging_bench import phantom, ras_affine, to_sitk  # noqa: E402

from radflow.imaging.preprocess import Grid  # noqa: E402
from radflow.segmentation.infer import (  # noqa: E402
    AIR_HU,
    body_box,
    model_grid,
    postprocessed,
    threshold_map,
)
from radflow.segmentation.model import SegmentationModel  # noqa: E402
from radflow.segmentation.network import build_network, window  # noqa: E402
from radflow.segmentation.params import SegmentationParams  # noqa: E402

SPACING = (0.7, 0.7, 1.0)  # x, y, z mm
MODEL_MM = 1.5
SW_BATCH = 4  # radflow.segmentation.sliding's
BODY_HU = -500.0
LESION_MM, LESION_HU = 15.0, 150.0
TRAIN_STEPS = 400
CONTENDERS = ("radflow", "monai")


def lesion_centre(size: tuple[int, int, int]) -> npt.NDArray[np.float64]:
    """The lesion's physical centre (x, y, z mm; the phantom's centre is 0): in the liver."""
    half = np.array(size, dtype=np.float64) * np.array(SPACING) / 2
    centre: npt.NDArray[np.float64] = np.array([-0.3, 0.1, -0.5]) * half
    return centre


def ct(size: tuple[int, int, int]) -> sitk.Image:
    """The phantom with a lesion in the liver, as a scanner gives it: int16 HU."""
    vol = phantom(size, SPACING)
    rng = np.random.default_rng(1)
    centre = lesion_centre(size)
    axes = [
        (np.arange(n) - (n - 1) / 2) * s - c for n, s, c in zip(size, SPACING, centre, strict=True)
    ]
    x, y = axes[0][None, :], axes[1][:, None]
    for k in np.flatnonzero(np.abs(axes[2]) <= LESION_MM):
        inside = x**2 + y**2 + axes[2][k] ** 2 <= LESION_MM**2
        vol[k][inside] = LESION_HU + rng.normal(0, 20, np.count_nonzero(inside))
    np.rint(vol, out=vol)
    image = to_sitk(vol.astype(np.int16), SPACING)
    del vol
    return image


def lesion_truth(image: sitk.Image) -> npt.NDArray[np.bool_]:
    """The lesion's voxels on `image`'s grid, (z, y, x)."""
    size = image.GetSize()
    centre = lesion_centre(size)
    axes = [
        (np.arange(n) - (n - 1) / 2) * s - c for n, s, c in zip(size, SPACING, centre, strict=True)
    ]
    z, y, x = np.meshgrid(axes[2] ** 2, axes[1] ** 2, axes[0] ** 2, indexing="ij", sparse=True)
    truth: npt.NDArray[np.bool_] = z + y + x <= LESION_MM**2
    return truth


def on_model_grid(image: sitk.Image, grid: Grid) -> sitk.Image:
    """The HU image on the model grid, as segment_image resamples it."""
    return sitk.Resample(
        image, list(grid.size), sitk.Transform(), sitk.sitkLinear, grid.origin, grid.spacing,
        grid.direction, AIR_HU, sitk.sitkFloat32,
    )  # fmt: skip


def train(params: SegmentationParams, image: sitk.Image, steps: int) -> dict[str, torch.Tensor]:
    """A few hundred Adam steps on 32³ patches of the model grid, half of them near the lesion
    and a quarter on bone: enough that the network's output is decisive, so the two masks can
    be compared."""
    from monai.losses.dice import DiceCELoss

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    grid = model_grid(image, (MODEL_MM,) * 3)
    hu = sitk.GetArrayFromImage(on_model_grid(image, grid))
    x = window(hu, params)
    box = body_box(hu, params.body_threshold_hu, (0, 0, 0))
    assert box is not None
    del hu
    bright = np.argwhere(x[::4, ::4, ::4] >= 1.0) * 4
    centre = np.array(grid.index(lesion_centre(image.GetSize())))[::-1]  # z, y, x
    n = np.array(params.patch)
    net = build_network(params)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    lo = np.array([s.start for s in box])
    hi = np.array([s.stop for s in box]) - n

    def patch() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        draw = rng.random()
        if draw < 0.5:
            start = np.rint(centre - n / 2 + rng.uniform(-20, 20, 3)).astype(int)
        elif draw < 0.75:  # hard negatives: bone is brighter than the lesion
            start = bright[rng.integers(len(bright))] - n // 2
        else:
            start = rng.integers(lo, np.maximum(lo + 1, hi))
        start = np.clip(start, 0, np.array(x.shape) - n)
        cut = tuple(slice(a, a + b) for a, b in zip(start, n, strict=True))
        points = np.meshgrid(*(np.arange(s.start, s.stop) for s in cut), indexing="ij")
        distance = (
            np.sqrt(sum((p - c) ** 2 for p, c in zip(points, centre, strict=True))) * MODEL_MM
        )
        return x[cut], (distance <= LESION_MM).astype(np.int64)

    for _ in range(steps):
        xs, ys = zip(*(patch() for _ in range(4)), strict=True)
        optimiser.zero_grad()
        logits = net(torch.from_numpy(np.stack(xs))[:, None])
        loss_fn(logits, torch.from_numpy(np.stack(ys))[:, None]).backward()
        optimiser.step()
        schedule.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- contenders


Masks = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def radflow_run(model: SegmentationModel, image: sitk.Image) -> Masks:
    """segment_image in its two steps, to keep the map before post-processing."""
    above = threshold_map(model, image)
    result = postprocessed(above, image, model.params)
    assert above is not None
    return sitk.GetArrayFromImage(above), sitk.GetArrayFromImage(result.mask)


def monai_prepare(image: sitk.Image) -> Any:
    """The input as MONAI's LoadImage + EnsureChannelFirst would hand it over (C, x, y, z)."""
    from monai.data import MetaTensor  # type: ignore[attr-defined]

    array = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0).astype(np.float32)
    return MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(ras_affine(image)))


def monai_run(model: SegmentationModel, image: Any) -> Masks:
    from monai.data import MetaTensor  # type: ignore[attr-defined]
    from monai.inferers import sliding_window_inference  # type: ignore[attr-defined]
    from monai.transforms import (  # type: ignore[attr-defined]
        AsDiscrete,
        KeepLargestConnectedComponent,
        ScaleIntensityRange,
        Spacing,
        SpatialResample,
    )

    params = model.params
    lo = params.window_level - params.window_width / 2
    net = model.network()
    spaced = Spacing(pixdim=(MODEL_MM,) * 3, mode="bilinear")(image)
    scaled: Any = ScaleIntensityRange(lo, lo + params.window_width, 0.0, 1.0, clip=True)(spaced)
    del spaced
    # The network reads (z, y, x), as it was trained; MONAI's arrays are (x, y, z).
    zyx = scaled.as_tensor().permute(0, 3, 2, 1)[None]
    with torch.inference_mode():
        logits = sliding_window_inference(
            zyx,
            roi_size=params.patch,
            sw_batch_size=SW_BATCH,
            predictor=net,
            overlap=params.overlap,
            mode="gaussian",
        )
        assert isinstance(logits, torch.Tensor)
        roi = torch.softmax(logits, dim=1)[0, 1:2].permute(0, 3, 2, 1)
    probability = MetaTensor(roi, affine=scaled.affine)
    del logits, zyx
    back = SpatialResample(mode="bilinear", padding_mode="zeros")(
        probability, dst_affine=image.affine, spatial_size=image.shape[1:]
    )
    del probability, scaled
    above = AsDiscrete(threshold=params.threshold)(back)
    del back
    # A copy: KeepLargestConnectedComponent writes into its input.
    kept = KeepLargestConnectedComponent()(above.clone())
    return tuple(np.asarray(m[0]).transpose(2, 1, 0).astype(np.uint8) for m in (above, kept))  # type: ignore[return-value]


def worker(name: str, size: tuple[int, int, int], model_path: Path, out: Path) -> None:
    torch.manual_seed(0)
    model = SegmentationModel.from_bytes(model_path.read_bytes())
    run = radflow_run if name == "radflow" else monai_run
    prepare = (lambda image: image) if name == "radflow" else monai_prepare
    run(model, prepare(ct((64, 64, 48))))  # warm-up: imports, thread pools, MONAI's caches
    image = prepare(ct(size))
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    above, kept = run(model, image)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    np.save(out / f"{name}-above.npy", above)
    np.save(out / f"{name}.npy", kept)
    figures = {"seconds": seconds, "peak_extra_mib": (peak - before) / 1024}
    (out / f"{name}.json").write_text(json.dumps(figures))


# --------------------------------------------------------------------------- the run


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 2 * float(np.count_nonzero(a & b)) / total if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="512x512x300", help="x by y by z voxels")
    parser.add_argument("--quick", action="store_true", help="a 256x256x120 volume")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size_text = "256x256x120" if args.quick else args.size
    size = tuple(int(n) for n in size_text.split("x"))
    assert len(size) == 3
    if args.worker:
        worker(args.worker, size, args.model, args.out)  # type: ignore[arg-type]
        return

    import monai

    # Like for like: MONAI's inferer runs the network once per window; radflow's default
    # also averages 8 mirrored passes (`mirror`), which costs 8 times as much.
    params = SegmentationParams(mirror=False)
    image = ct(size)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    state = train(params, image, TRAIN_STEPS)
    trained_s = time.perf_counter() - t0
    model = SegmentationModel(params, (MODEL_MM,) * 3, state)
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), MONAI {monai.__version__}, SimpleITK "
        f"{sitk.Version.VersionString()}, numpy {np.__version__}; network trained "
        f"{TRAIN_STEPS} steps in {trained_s:.0f} s"
    )
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model_path = out / "model.pt"
        model_path.write_bytes(model.to_bytes())
        for name in CONTENDERS:
            command = [sys.executable, __file__, "--worker", name, "--size", size_text]
            subprocess.run([*command, "--model", str(model_path), "--out", tmp], check=True)
            figures[name] = json.loads((out / f"{name}.json").read_text())
        masks = {name: np.load(out / f"{name}.npy").astype(bool) for name in CONTENDERS}
        above = {name: np.load(out / f"{name}-above.npy").astype(bool) for name in CONTENDERS}

    body = sitk.GetArrayViewFromImage(image) > BODY_HU
    truth = lesion_truth(image)
    agreement = dice(masks["radflow"] & body, masks["monai"] & body)
    raw_agreement = dice(above["radflow"] & body, above["monai"] & body)
    grid = model_grid(image, model.spacing_mm)
    # The body's box on the model grid, as segment_image finds it.
    resampled = on_model_grid(image, grid)
    margin = [p // 2 for p in params.patch]
    box = body_box(sitk.GetArrayViewFromImage(resampled), params.body_threshold_hu, margin)
    assert box is not None
    share = int(np.prod([s.stop - s.start for s in box])) / int(np.prod(grid.size))

    base = figures["monai"]["seconds"]
    print(f"\n### Segmentation of a {size_text} CT (0.7 x 0.7 x 1 mm) at {MODEL_MM} mm\n")
    print(
        f"Model grid {'x'.join(map(str, grid.size))}; radflow's windows cover the body's box, "
        f"{share:.0%} of it. Patch {'x'.join(map(str, params.patch))}, overlap "
        f"{params.overlap}, sw_batch_size {SW_BATCH}, Gaussian.\n"
    )
    print("| method | seconds | × MONAI | peak extra MiB | mask voxels | Dice to the lesion |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, label in (("radflow", "radflow segment_image"), ("monai", "MONAI user")):
        f = figures[name]
        print(
            f"| {label} | {f['seconds']:.1f} | {f['seconds'] / base:.2f} | "
            f"{f['peak_extra_mib']:.0f} | {int(np.count_nonzero(masks[name]))} | "
            f"{dice(masks[name], truth):.3f} |"
        )
    print(
        f"\nDice of the two contenders within the body: thresholded maps {raw_agreement:.3f}, "
        f"kept components {agreement:.3f}; lesion voxels {int(np.count_nonzero(truth))}; Dice "
        f"of each thresholded map to the lesion: radflow {dice(above['radflow'], truth):.3f}, "
        f"MONAI {dice(above['monai'], truth):.3f}"
    )


if __name__ == "__main__":
    main()
