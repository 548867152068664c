"""A registration level beside a busy Python thread, with and without a Python command on
ITK's iteration event.

A task thread of a flow runs a stage in Python (pydicom's de-identification of the next
study) while another registers: ITK's optimiser releases the GIL, but a Python command on
its iteration event takes it back at every iteration, and then waits up to the interpreter's
switch interval (5 ms) each time. Each round times the same level (the 4 mm level of the
512 x 512 x 300 pair of `imaging_bench.py --realistic`, 60 iterations, one ITK thread as
radflow runs it) alone and beside a thread that spins in Python, first without the command,
then with one.

Usage: python bench/register_beside_python.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import imaging_bench as ib  # noqa: E402

from radflow.imaging import register as R  # noqa: E402


def level(fixed: sitk.Image, moving: sitk.Image, command: bool) -> float:
    """Seconds of one 60-iteration Execute, as radflow's `_run` sets each level up."""
    reg = R._method(fixed, 1, 0.5)
    # No stopping rule but the count: every round does the same 60 iterations.
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=0.5, minStep=1e-9, numberOfIterations=60, relaxationFactor=0.99,
        gradientMagnitudeTolerance=1e-12,
    )  # fmt: skip
    reg.SetOptimizerScalesFromPhysicalShift()
    if command:
        reg.AddCommand(sitk.sitkIterationEvent, lambda: None)
    start = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform())
    reg.SetInitialTransform(sitk.Euler3DTransform(start), inPlace=False)
    t0 = time.perf_counter()
    with R._one_thread():
        reg.Execute(fixed, moving)
    return time.perf_counter() - t0


def beside_busy_python(fn: Callable[[], float]) -> float:
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        return fn()
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spacing = ib.REALISTIC_SPACING
    clean = ib.to_sitk(ib.phantom((512, 512, 300), spacing, noise=False), spacing)
    rng = np.random.default_rng(1)
    fixed = R.pyramid(ib.with_noise(clean, rng), R.WORKING_SPACING_MM, 3)[1]
    moving = R.pyramid(ib.with_noise(clean, rng), R.WORKING_SPACING_MM, 3)[1]
    print(f"level of {'x'.join(map(str, fixed.GetSize()))} voxels, 60 iterations\n")
    print("| round | iteration command | alone s | beside busy Python s | beside / alone |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for k in range(1, args.rounds + 1):
        for command in (False, True):
            alone = level(fixed, moving, command)
            busy = beside_busy_python(functools.partial(level, fixed, moving, command))
            label = "a Python callable" if command else "none (radflow now)"
            print(f"| {k} | {label} | {alone:.3f} | {busy:.3f} | {busy / alone:.2f} |", flush=True)


if __name__ == "__main__":
    main()
