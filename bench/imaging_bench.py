"""Preprocessing speed and memory: radflow vs TorchIO vs MONAI vs a bare SimpleITK floor, and
registration time and accuracy, in one run.

Usage: python bench/imaging_bench.py [--size 512x512x300] [--repeats 3] [--reg-size 256x256x128]
       python bench/imaging_bench.py --realistic [--size 512x512x300]

`--realistic` instead times, on CT of the given size at 0.7 x 0.7 x 1.25 mm: registration
before (ITK's own pyramid, `itk_pyramid_register.py`) and after (radflow's box-averaged
pyramid) against a bare sitk.Resample of the moving image, with TRE; the ROI rule on the whole
image against coarse to fine (masks compared voxel for voxel) on synthesized studies; and
SEG/RTSTRUCT rasterisation against reading the primary series.

Every method gets the same in-memory CT-like float32 volume (0.7 x 0.7 x 2.5 mm, identity
direction) in its own container, built outside the timing, and does the same work: linear
resample to 1.5 mm isotropic, crop/pad to 192³ (air outside), window level 40 / width 400 to
[0, 1]. Seconds are the best of `--repeats`; memory is the peak resident set during one call
above the resident set before it (Linux VmHWM, reset through /proc/self/clear_refs). TorchIO
and MONAI are optional: a missing one is reported as such. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radflow.imaging.preprocess import CropPad, Pipeline, Reorient, Resample, Window  # noqa: E402
from radflow.imaging.register import WORKING_SPACING_MM, register  # noqa: E402

REALISTIC_SPACING = (0.7, 0.7, 1.25)

SPACING = (0.7, 0.7, 2.5)  # x, y, z mm
TARGET_MM = 1.5
SHAPE = 192
LEVEL, WIDTH = 40.0, 400.0
LO, HI = LEVEL - WIDTH / 2, LEVEL + WIDTH / 2

Volume = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- input


def phantom(size: tuple[int, int, int], spacing: tuple[float, ...], noise: bool = True) -> Volume:
    """A CT-like (z, y, x) HU volume: an off-centre body, unequal lungs, a spine, organs, noise.

    Built slice by slice (2-D cross-sections scaled along z) to keep memory near one volume.
    """
    nx, ny, nz = size
    sx, sy, sz = spacing
    x = ((np.arange(nx) - (nx - 1) / 2) * sx)[None, :]
    y = ((np.arange(ny) - (ny - 1) / 2) * sy)[:, None]
    hx, hy, hz = nx * sx / 2, ny * sy / 2, nz * sz / 2
    vol = np.empty((nz, ny, nx), dtype=np.float32)
    for k in range(nz):
        z = (k - (nz - 1) / 2) * sz / hz  # -1 .. 1
        s = vol[k]
        s.fill(-1000.0)
        body = ((x - 0.05 * hx) / (0.85 * hx)) ** 2 + ((y + 0.08 * hy) / (0.62 * hy)) ** 2 <= 1
        s[body] = 40.0
        if abs(z) < 0.8:
            r = np.sqrt(1 - (z / 0.8) ** 2)
            for cx, ax in ((-0.38, 0.25), (0.42, 0.21)):  # unequal lungs
                lung = ((x - cx * hx) / (ax * hx * r)) ** 2 + (
                    (y + 0.12 * hy) / (0.4 * hy * r)
                ) ** 2
                s[lung <= 1] = -850.0
            liver = ((x + 0.3 * hx) / (0.3 * hx)) ** 2 + ((y - 0.1 * hy) / (0.2 * hy)) ** 2
            s[(liver <= 1) & (z < -0.2)] = 60.0
        spine = (x / (0.06 * hx)) ** 2 + ((y - 0.38 * hy) / (0.07 * hy)) ** 2 <= 1
        s[spine] = 700.0
    if noise:
        rng = np.random.default_rng(0)
        for k in range(nz):
            vol[k] += rng.standard_normal((ny, nx), dtype=np.float32) * 20.0
    return vol


def to_sitk(vol: Volume, spacing: tuple[float, ...]) -> sitk.Image:
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(-(n - 1) * s / 2 for n, s in zip(image.GetSize(), spacing, strict=True)))
    return image


def ras_affine(image: sitk.Image) -> npt.NDArray[np.float64]:
    """The image's (LPS) geometry as the RAS affine TorchIO and MONAI expect."""
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


# --------------------------------------------------------------------------- methods


def bare_resample(image: sitk.Image, spacing_mm: float = TARGET_MM) -> sitk.Image:
    """One sitk.Resample onto an isotropic grid over the same extent: a floor's whole work."""
    size = [
        round(n * s / spacing_mm) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)
    ]
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        (spacing_mm,) * 3,
        image.GetDirection(),
        -1000.0,
        sitk.sitkFloat32,
    )


def floor(image: sitk.Image) -> Volume:
    """The bare minimum: one sitk.Resample, a numpy crop/pad about the centre, a numpy window."""
    out = bare_resample(image)
    arr = sitk.GetArrayViewFromImage(out)
    result = np.full((SHAPE,) * 3, -1000.0, dtype=np.float32)
    src, dst = [], []
    for n in arr.shape:
        start = (n - SHAPE) // 2  # negative: the crop pads
        lo, hi = max(0, start), min(n, start + SHAPE)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    result[tuple(dst)] = arr[tuple(src)]
    result -= LO
    result *= 1 / WIDTH
    np.clip(result, 0.0, 1.0, out=result)
    return result


RADFLOW = Pipeline(
    (Reorient(), Resample((TARGET_MM,) * 3), CropPad((SHAPE,) * 3), Window(LEVEL, WIDTH))
)


def radflow_fused(image: sitk.Image) -> sitk.Image:
    return RADFLOW(image)[0]


def radflow_steps(image: sitk.Image) -> sitk.Image:
    return RADFLOW.step_by_step(image)[0]


def torchio_method() -> tuple[Callable[[Any], Any], Callable[[Volume, sitk.Image], Any]] | None:
    try:
        import torch
        import torchio as tio
    except ImportError:
        return None
    transform = tio.Compose(
        [
            tio.Resample(TARGET_MM),
            tio.CropOrPad(SHAPE, padding_mode=-1000.0),
            tio.Clamp(LO, HI),
            tio.RescaleIntensity(out_min_max=(0, 1), in_min_max=(LO, HI)),
        ]
    )

    def build(vol: Volume, image: sitk.Image) -> Any:
        tensor = torch.from_numpy(np.ascontiguousarray(vol.transpose(2, 1, 0)))[None]  # C x y z
        return tio.ScalarImage(tensor=tensor, affine=ras_affine(image))

    return transform, build


def monai_method(
    lazy: bool,
) -> tuple[Callable[[Any], Any], Callable[[Volume, sitk.Image], Any]] | None:
    try:
        import torch
        from monai.data import MetaTensor  # type: ignore[attr-defined]
        from monai.transforms import (  # type: ignore[attr-defined]
            Compose,
            ResizeWithPadOrCrop,
            ScaleIntensityRange,
            Spacing,
        )
    except ImportError:
        return None
    transform = Compose(
        [
            Spacing(pixdim=(TARGET_MM,) * 3, mode="bilinear"),
            ResizeWithPadOrCrop(SHAPE, mode="constant", value=-1000.0),
            ScaleIntensityRange(LO, HI, 0.0, 1.0, clip=True),
        ],
        lazy=lazy,
    )

    def build(vol: Volume, image: sitk.Image) -> Any:
        tensor = torch.from_numpy(np.ascontiguousarray(vol.transpose(2, 1, 0)))[None]
        return MetaTensor(tensor, affine=torch.as_tensor(ras_affine(image)))

    return transform, build


# --------------------------------------------------------------------------- measuring


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_extra_mib(fn: Callable[[], Any]) -> float:
    """Peak resident memory during `fn()` above the resident memory before it (Linux)."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return float("nan")
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return (peak - before) / 1024


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float
    memory_mib: float
    shape: tuple[int, ...]


def shape_of(out: Any) -> tuple[int, ...]:
    if isinstance(out, sitk.Image):
        return tuple(out.GetSize())
    data = getattr(out, "data", out)
    return tuple(int(n) for n in data.shape)


def preprocess_table(size: tuple[int, int, int], repeats: int) -> list[Row]:
    t0 = time.perf_counter()
    vol = phantom(size, SPACING)
    image = to_sitk(vol, SPACING)
    built = time.perf_counter() - t0
    print(f"input {size} float32 ({vol.nbytes / 2**20:.0f} MiB) built in {built:.1f} s")
    methods: list[tuple[str, Callable[[], Any]]] = [
        ("bare SimpleITK resample + numpy crop/window (floor)", lambda: floor(image)),
        ("radflow Pipeline (fused resample+crop, default)", lambda: radflow_fused(image)),
        ("radflow Pipeline.step_by_step (unfused)", lambda: radflow_steps(image)),
    ]
    peers = [
        ("TorchIO", torchio_method()),
        ("MONAI (eager)", monai_method(lazy=False)),
        ("MONAI (lazy=True)", monai_method(lazy=True)),
    ]
    for name, found in peers:
        if found is None:
            print(f"{name}: not installed, skipped")
            continue
        transform, build = found
        container = build(vol, image)
        methods.append((name, functools.partial(transform, container)))
    rows = []
    for name, fn in methods:
        out = fn()  # warm-up (imports, thread pools), and the output shape
        memory = peak_extra_mib(fn)
        rows.append(Row(name, best_of(fn, repeats), memory, shape_of(out)))
        del out
    return rows


def with_noise(image: sitk.Image, rng: np.random.Generator) -> sitk.Image:
    """`image` plus Gaussian noise of 20 (HU), as each image of a registration pair gets."""
    arr = sitk.GetArrayFromImage(image)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * 20.0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out


def registration_rows(size: tuple[int, int, int]) -> list[tuple[str, float, float, int]]:
    """Rigid (and affine) time and TRE for a pair with a known 10° oblique, 8 mm motion."""
    spacing = (1.0, 1.0, 2.0)
    clean = to_sitk(phantom(size, spacing, noise=False), spacing)
    rng = np.random.default_rng(1)

    truth = sitk.Euler3DTransform()
    truth.SetRotation(*np.deg2rad([6.0, -5.0, 6.0]))  # about 10° about an oblique axis
    truth.SetTranslation((5.0, -5.0, 4.0))  # 8.1 mm
    fixed = with_noise(clean, rng)
    moving = with_noise(sitk.Resample(clean, truth.GetInverse(), sitk.sitkLinear, -1000.0), rng)
    body = np.argwhere(sitk.GetArrayViewFromImage(clean) > -500)[::50, ::-1].astype(float)
    points = [clean.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in body]

    def tre(t: sitk.Transform) -> float:
        return float(
            np.mean(
                [
                    np.linalg.norm(np.subtract(t.TransformPoint(p), truth.TransformPoint(p)))
                    for p in points
                ]
            )
        )

    angle = np.rad2deg(np.arccos((np.trace(np.array(truth.GetMatrix()).reshape(3, 3)) - 1) / 2))
    print(f"registration pair {size}, 1 x 1 x 2 mm; true motion {angle:.1f}° and 8.1 mm")
    rows = [("identity (no registration)", 0.0, tre(sitk.Euler3DTransform()), 0)]
    for label, kind, working in (
        (f"rigid, {WORKING_SPACING_MM:g} mm working copy (default)", "rigid", WORKING_SPACING_MM),
        (f"affine, {WORKING_SPACING_MM:g} mm working copy", "affine", WORKING_SPACING_MM),
        ("rigid, 4 mm working copy", "rigid", 4.0),
        ("rigid, native 1 x 1 x 2 mm", "rigid", None),
    ):
        t0 = time.perf_counter()
        reg = register(fixed, moving, kind, working_spacing_mm=working)  # type: ignore[arg-type]
        rows.append((label, time.perf_counter() - t0, tre(reg.transform), reg.iterations))
    return rows


# --------------------------------------------------------------------------- realistic size


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one call (after a garbage collection) and its result."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def realistic_pair(
    size: tuple[int, int, int],
) -> tuple[sitk.Image, sitk.Image, sitk.Euler3DTransform, npt.NDArray[np.float64]]:
    """A CT pair at REALISTIC_SPACING, each with its own noise, the moving one's anatomy
    moved by a known 10° oblique, 8.1 mm rigid motion, and every 500th body voxel's physical
    point (where TRE is measured)."""
    spacing = REALISTIC_SPACING
    clean = to_sitk(phantom(size, spacing, noise=False), spacing)
    rng = np.random.default_rng(1)
    truth = sitk.Euler3DTransform()
    truth.SetRotation(*np.deg2rad([6.0, -5.0, 6.0]))
    truth.SetTranslation((5.0, -5.0, 4.0))
    fixed = with_noise(clean, rng)
    moving = with_noise(sitk.Resample(clean, truth.GetInverse(), sitk.sitkLinear, -1000.0), rng)
    body = np.argwhere(sitk.GetArrayViewFromImage(clean) > -500)[::500, ::-1].astype(float)
    points = np.array([clean.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in body])
    return fixed, moving, truth, points


def realistic_registration(size: tuple[int, int, int], seeds: int = 1) -> None:
    """Before/after/floor for one CT pair with a known 10° oblique, 8.1 mm rigid motion; with
    `seeds` > 1 both also register it with the metric's sampling seeds 2..`seeds` (TRE only:
    one draw of samples is one TRE, the seeds show its spread)."""
    from itk_pyramid_register import register as itk_pyramid_register

    fixed, moving, truth, points = realistic_pair(size)

    def tre(t: sitk.Transform) -> float:
        found = np.array([t.TransformPoint(tuple(p)) for p in points])
        true = np.array([truth.TransformPoint(tuple(p)) for p in points])
        return float(np.linalg.norm(found - true, axis=1).mean())

    floor_s, _ = timed(
        lambda: sitk.Resample(moving, fixed, truth, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    )
    old_s, old = timed(lambda: itk_pyramid_register(fixed, moving))
    new_s, new = timed(lambda: register(fixed, moving))
    again = register(fixed, moving)
    same = list(again.transform.GetParameters()) == list(new.transform.GetParameters())
    print(f"\n### Registration of a {'x'.join(map(str, size))} CT pair (0.7 x 0.7 x 1.25 mm)\n")
    print(f"True motion 10.0° oblique and 8.1 mm; {len(points)} body points; one run each.\n")
    print("| | seconds | × floor | mean TRE mm | iterations |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| identity (no registration) | | | {tre(sitk.Euler3DTransform()):.2f} | |")
    print(f"| floor: bare sitk.Resample of the moving image | {floor_s:.2f} | 1.00 | | |")
    for label, seconds, reg in (
        ("before: ITK's pyramid from the 2 mm working copies", old_s, old),
        ("after: radflow's 8/4/2 mm box-averaged pyramid", new_s, new),
    ):
        print(
            f"| {label} | {seconds:.2f} | {seconds / floor_s:.2f} | "
            f"{tre(reg.transform):.3f} | {reg.iterations} |"
        )
    print(f"\nbefore / after: {old_s / new_s:.1f}x; after run twice, same parameters: {same}")
    if seeds < 2:
        return
    print("\n| sampling seed | before: mean TRE mm | after: mean TRE mm |")
    print("| ---: | ---: | ---: |")
    by_seed = [(tre(old.transform), tre(new.transform))]
    print(f"| 1 | {by_seed[0][0]:.3f} | {by_seed[0][1]:.3f} |", flush=True)
    for seed in range(2, seeds + 1):
        pair = (
            tre(itk_pyramid_register(fixed, moving, seed=seed).transform),
            tre(register(fixed, moving, seed=seed).transform),
        )
        by_seed.append(pair)
        print(f"| {seed} | {pair[0]:.3f} | {pair[1]:.3f} |", flush=True)
    mean, worst = np.mean(by_seed, axis=0), np.max(by_seed, axis=0)
    print(f"| mean (worst) | {mean[0]:.3f} ({worst[0]:.3f}) | {mean[1]:.3f} ({worst[1]:.3f}) |")


def realistic_roi(size: tuple[int, int, int], studies: int) -> None:
    """The ROI rule, whole image vs coarse to fine, and annotation rasterisation, on
    synthesized studies of `size` (each with a bright lesion and a SEG or an RTSTRUCT)."""
    import tempfile

    from radflow.annotations import annotation_kind, segments_on_grid
    from radflow.imaging.read import read_series
    from radflow.imaging.roi import coarse_to_fine_mask, lesion_mask, whole_image_mask
    from radflow.synth import SynthSpec, synthesize

    nx, ny, nz = size
    spec = SynthSpec(
        studies=studies,
        rows=ny,
        columns=nx,
        slices=nz,
        pixel_spacing=REALISTIC_SPACING[0],
        slice_thickness=REALISTIC_SPACING[2],
        annotations=("seg", "rtstruct"),
    )
    roi_rows: list[tuple[int, int, int, float, float, float, bool, bool]] = []
    annotation_rows: list[tuple[int, str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        made = synthesize(Path(tmp) / "inbox", Path(tmp) / "labels.csv", spec)
        for n, study in enumerate(made, 1):
            primary = sorted(f for f in study.files if f.parent.name == "S1")
            read_s, image = timed(functools.partial(read_series, primary))
            whole_s, whole = timed(functools.partial(whole_image_mask, image))
            fast_s, fast = timed(functools.partial(lesion_mask, image))
            boxed = coarse_to_fine_mask(image, 80.0, 1.0) is not None
            equal = np.array_equal(
                sitk.GetArrayViewFromImage(whole), sitk.GetArrayViewFromImage(fast)
            )
            voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(whole)))
            roi_rows.append((n, study.label, voxels, read_s, whole_s, fast_s, boxed, equal))
            for path in study.files:
                if path.parent.name.startswith("S") and path.parent.name not in ("S1", "S2"):
                    kind = annotation_kind(path)
                    if kind is not None:
                        raster_s, _ = timed(functools.partial(segments_on_grid, path, image))
                        annotation_rows.append((n, kind, read_s, raster_s))
    shape = "x".join(map(str, size))
    print(f"\n### ROI rule on synthesized {shape} CT studies (0.7 x 0.7 x 1.25 mm)\n")
    print(
        "| study | lesion | mask voxels | read primary s | whole image s | coarse to fine s | "
        "whole / coarse to fine | box used | masks equal |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for n, label, voxels, read_s, whole_s, fast_s, boxed, equal in roi_rows:
        print(
            f"| {n} | label {label} | {voxels} | {read_s:.2f} | {whole_s:.2f} | {fast_s:.2f} | "
            f"{whole_s / fast_s:.1f} | {boxed} | {equal} |"
        )
    print("\n| study | annotation | read primary s | onto the primary's grid s | × read |")
    print("| --- | --- | ---: | ---: | ---: |")
    for n, what, read_s, raster_s in annotation_rows:
        print(f"| {n} | {what} | {read_s:.2f} | {raster_s:.2f} | {raster_s / read_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="512x512x300", help="x by y by z voxels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reg-size", default="256x256x128")
    parser.add_argument("--realistic", action="store_true", help="see the module docstring")
    parser.add_argument("--studies", type=int, default=3, help="with --realistic")
    parser.add_argument(
        "--reg-seeds", type=int, default=1, help="with --realistic: sampling seeds 1..N"
    )
    parser.add_argument(
        "--no-roi", action="store_true", help="with --realistic: the registration only"
    )
    args = parser.parse_args()
    size = tuple(int(n) for n in args.size.split("x"))
    reg_size = tuple(int(n) for n in args.reg_size.split("x"))
    assert len(size) == 3 and len(reg_size) == 3

    versions = [f"SimpleITK {sitk.Version.VersionString()}", f"numpy {np.__version__}"]
    for module in ("torch", "torchio", "monai"):
        with contextlib.suppress(ImportError):
            versions.append(f"{module} {__import__(module).__version__}")
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    print(
        f"{platform.python_version()}, {os.cpu_count()} CPUs, ITK threads {threads}; "
        + ", ".join(versions)
    )

    if args.realistic:
        realistic_registration(size, args.reg_seeds)  # type: ignore[arg-type]
        if not args.no_roi:
            realistic_roi(size, args.studies)  # type: ignore[arg-type]
        return

    rows = preprocess_table(size, args.repeats)  # type: ignore[arg-type]
    base = rows[0].seconds
    print(f"\n### Preprocess {args.size} (0.7 x 0.7 x 2.5 mm) to 1.5 mm, {SHAPE}³, window")
    print(f"\nBest of {args.repeats}; memory: peak resident during one call above the start.\n")
    print("| method | seconds | × floor | peak extra MiB | output |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in rows:
        shape = "x".join(map(str, r.shape))
        ratio = r.seconds / base
        print(f"| {r.name} | {r.seconds:.2f} | {ratio:.2f} | {r.memory_mib:.0f} | {shape} |")

    reg = registration_rows(reg_size)  # type: ignore[arg-type]
    print(f"\n### Registration {args.reg_size} pair, single-threaded ITK registration\n")
    print("| registration | seconds | mean TRE mm | iterations |")
    print("| --- | ---: | ---: | ---: |")
    for label, seconds, tre_mm, iterations in reg:
        print(f"| {label} | {seconds:.1f} | {tre_mm:.2f} | {iterations} |")


if __name__ == "__main__":
    main()
