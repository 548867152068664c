"""Time of the full radiomics feature set on spherical ROIs of growing size and bin counts.

Usage: python bench/features_bench.py [--diameters 32 64 128] [--bin-widths 25 10]

pyradiomics does not install on this machine (its source build fails), so it cannot run in
the same process; DESIGN.md records its time measured here earlier for the same ROI sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radflow.features.radiomics import first_order, shape
from radflow.features.texture import texture_features
from radflow.features.zones import zone_features


def phantom(diameter: int, seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    size = diameter + 8
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:size, :size, :size]
    c = (size - 1) / 2
    inside = (x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2 <= (diameter / 2) ** 2
    values = (40 + rng.normal(0, 60, (size, size, size))).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def first_order_and_shape(image: sitk.Image, mask: sitk.Image, bin_width: float) -> None:
    first_order(image, mask, bin_width)
    shape(mask)


def best_of(n: int, fn, *args):  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--diameters", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--bin-widths", type=float, nargs="+", default=[25.0, 10.0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        "| ROI diameter (voxels) | voxels | bin width | first order + shape s | GLCM+GLRLM s "
        "| GLSZM+GLDM+NGTDM s | total s |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in args.diameters:
        image, mask = phantom(d)
        voxels = int(sitk.GetArrayViewFromImage(mask).sum())
        for bw in args.bin_widths:
            fo = best_of(args.repeats, first_order_and_shape, image, mask, bw)
            tx = best_of(args.repeats, texture_features, image, mask, bw)
            zn = best_of(args.repeats, zone_features, image, mask, bw)
            print(
                f"| {d} | {voxels} | {bw:g} | {fo:.2f} | {tx:.2f} | {zn:.2f} | {fo + tx + zn:.2f} |"
            )


if __name__ == "__main__":
    main()
