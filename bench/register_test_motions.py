"""TRE of the registration tests' motions, before (ITK's pyramid, `itk_pyramid_register.py`,
or with `--before REV` radflow's registration at that git revision) and after (radflow's
today): the images, motions and points of tests/unit/imaging/test_register.py, printed as a
Markdown table. `--realistic` adds the 512 x 512 x 300 CT pair of `imaging_bench.py
--realistic` (10° oblique, 8.1 mm) as a case.

With `--seeds N` each case is registered with the metric's sampling seeds 1..N by both
methods: which voxels Mattes MI samples is the one random choice in a registration, so a
single seed's worst case says as much about the draw as about the method; the table then
gives each case's mean and worst over the seeds, and each seed's mean and worst over the
cases.

Usage: python bench/register_test_motions.py [--seeds N] [--before REV] [--realistic]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "unit" / "imaging")]

import itk_pyramid_register  # noqa: E402
import test_register as t  # noqa: E402
from at_revision import module_at  # noqa: E402

from radflow.imaging import register as after  # noqa: E402
from radflow.imaging.read import read_series  # noqa: E402
from radflow.synth import SynthSpec, synthesize  # noqa: E402

Case = tuple[str, sitk.Image, sitk.Image, sitk.Transform, np.ndarray, str]


def _ct(root: Path, spec: SynthSpec) -> tuple[sitk.Image, np.ndarray]:
    (study,) = synthesize(root / "inbox", root / "labels.csv", spec)
    image = read_series(sorted(f for f in study.files if f.parent.name == "S1"))
    return image, t._physical_points(image, sitk.GetArrayFromImage(image) > -500)


def cases(root: Path) -> list[Case]:
    mri = sitk.ReadImage(t.ANATOMICAL, sitk.sitkFloat32)
    head = t._physical_points(mri, sitk.GetArrayFromImage(sitk.OtsuThreshold(mri, 0, 1)) > 0)
    out: list[Case] = []
    for axis, degrees, shift in [
        ((1.0, 2.0, 2.0), 5.0, (4.0, -3.0, 2.0)),
        ((2.0, -1.0, 1.0), 10.0, (-6.0, 5.0, -4.0)),
        ((1.0, 1.0, -3.0), 15.0, (5.7, -5.7, 5.7)),
    ]:
        truth = t._motion(t._rotation(axis, degrees), t._centre(mri), shift)
        out.append((f"MRI {degrees:g}°", mri, t._moved(mri, truth, 0.0), truth, head, "rigid"))
    truth = t._motion(1.05 * t._rotation((1.0, 0.0, 1.0), 4.0), t._centre(mri), (2.0, -3.0, 1.0))
    out.append(("MRI affine, scale 1.05", mri, t._moved(mri, truth, 0.0), truth, head, "affine"))
    rng = np.random.default_rng(2026)  # the robustness test's twelve motions, in its order
    for i in range(12):
        axis = rng.normal(size=3)
        degrees = float(rng.uniform(3, 15) * rng.choice([-1, 1]))
        direction = rng.normal(size=3)
        shift = direction / np.linalg.norm(direction) * rng.uniform(2, 10)
        truth = t._motion(
            t._rotation((axis[0], axis[1], axis[2]), degrees),
            t._centre(mri),
            (float(shift[0]), float(shift[1]), float(shift[2])),
        )
        out.append((f"MRI random {i + 1}", mri, t._moved(mri, truth, 0.0), truth, head, "rigid"))
    ct, body = _ct(root / "a", SynthSpec(studies=1))
    truth = t._motion(t._rotation((2.0, -1.0, 2.0), 15.0), t._centre(ct), (6.0, -8.0, 0.0))
    out.append(("synthetic CT 15°, 10 mm", ct, t._moved(ct, truth, -1000.0), truth, body, "rigid"))
    ct, body = _ct(root / "b", SynthSpec(studies=1, rows=192, columns=192, slices=64))
    truth = t._motion(t._rotation((1.0, -2.0, 1.0), 15.0), t._centre(ct), (-7.0, 0.0, 7.0))
    moved = t._moved(ct, truth, -1000.0)
    out.append(("192 x 192 x 64 CT", ct, moved, truth, body[::20], "rigid"))
    return out


def realistic_case() -> Case:
    """imaging_bench's realistic pair: its phantom, noise, motion and body points."""
    from imaging_bench import realistic_pair

    fixed, moving, truth, points = realistic_pair((512, 512, 300))
    return ("512 x 512 x 300 CT pair", fixed, moving, truth, points, "rigid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds 1..N per case")
    parser.add_argument("--before", metavar="REV", help="radflow's registration at this revision")
    parser.add_argument("--realistic", action="store_true", help="add the 512x512x300 CT pair")
    args = parser.parse_args()
    seeds = range(1, args.seeds + 1)
    before = (
        module_at(args.before, "radflow/imaging/register.py", "register_before")
        if args.before
        else itk_pyramid_register
    )
    if len(seeds) == 1:
        print("| case | TRE before mm | TRE after mm | s before | s after |")
        print("| --- | ---: | ---: | ---: | ---: |")
    else:
        print(
            "| case | before: mean (worst) over seeds mm | after: mean (worst) mm"
            " | s before | s after |"
        )
        print("| --- | ---: | ---: | ---: | ---: |")
    # tres[case][seed] = (before, after)
    tres: list[list[tuple[float, float]]] = []
    total = [0.0, 0.0]  # seconds, every case and seed
    with tempfile.TemporaryDirectory() as tmp:
        every_case = cases(Path(tmp)) + ([realistic_case()] if args.realistic else [])
        for name, fixed, moving, truth, points, kind in every_case:
            row: list[tuple[float, float]] = []
            seconds = [0.0, 0.0]  # over the seeds
            for seed in seeds:
                t0 = time.perf_counter()
                old = before.register(fixed, moving, kind, seed=seed)  # type: ignore[arg-type]
                t1 = time.perf_counter()
                new = after.register(fixed, moving, kind, seed=seed)  # type: ignore[arg-type]
                t2 = time.perf_counter()
                pair = (t._tre(old.transform, truth, points), t._tre(new.transform, truth, points))
                row.append(pair)
                seconds = [seconds[0] + t1 - t0, seconds[1] + t2 - t1]
            tres.append(row)
            total = [total[0] + seconds[0], total[1] + seconds[1]]
            if len(seeds) == 1:
                print(
                    f"| {name} | {pair[0]:.3f} | {pair[1]:.3f} | {t1 - t0:.2f} | {t2 - t1:.2f} |",
                    flush=True,
                )
            else:
                mean, worst = np.mean(row, axis=0), np.max(row, axis=0)
                print(
                    f"| {name} | {mean[0]:.3f} ({worst[0]:.3f}) | {mean[1]:.3f} ({worst[1]:.3f})"
                    f" | {seconds[0]:.2f} | {seconds[1]:.2f} |",
                    flush=True,
                )
    every = np.array(tres)  # case, seed, method
    mean, worst = every.mean(axis=(0, 1)), every.max(axis=(0, 1))
    if len(seeds) == 1:
        print(f"| mean | {mean[0]:.3f} | {mean[1]:.3f} | | |")
        print(f"| worst | {worst[0]:.3f} | {worst[1]:.3f} | | |")
        return
    print(
        f"| every case and seed | {mean[0]:.3f} ({worst[0]:.3f}) | {mean[1]:.3f} ({worst[1]:.3f})"
        f" | {total[0]:.2f} | {total[1]:.2f} |"
    )
    for i, seed in enumerate(seeds):
        m, w = every[:, i].mean(axis=0), every[:, i].max(axis=0)
        print(
            f"| seed {seed}: mean (worst) over the cases "
            f"| {m[0]:.3f} ({w[0]:.3f}) | {m[1]:.3f} ({w[1]:.3f}) | | |"
        )
    wins = int((every[..., 1] <= every[..., 0]).sum())
    print(f"| after ≤ before | | {wins} of {every.shape[0] * every.shape[1]} registrations | | |")


if __name__ == "__main__":
    main()
