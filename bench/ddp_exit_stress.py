"""Two-process data-parallel training, many times over on a loaded machine: how many end
with a process killed by a signal after the training succeeded, and the seconds a run takes.

CI failed once on `test_two_gloo_processes_match_one` with "process 1 terminated with signal
SIGABRT" ("terminate called without an active exception", no Python frame: the interpreter's
finalisation). This runs the test's training (the same spheres and settings) `--runs` times,
optionally beside `--busy` processes spinning on the CPU as a shared CI machine does, and
prints each failure and the count. Run it with `PYTHONPATH=<a clone at REV>` to count REV's
failures (the spawned processes import radflow from there too).

Usage: python bench/ddp_exit_stress.py [--runs 60] [--busy 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.seg_spheres import SPACING, TINY, training_spheres  # noqa: E402

import radflow  # noqa: E402
from radflow.segmentation.distributed import DistributedTrainingError  # noqa: E402
from radflow.segmentation.train import train_segmentation  # noqa: E402


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--busy", type=int, default=1, help="processes spinning beside")
    args = parser.parse_args()
    print(f"radflow from {Path(radflow.__file__).parent}; torch {torch.__version__}")
    torch.set_num_threads(1)  # as the test runs it
    train, validation = training_spheres()
    params = TINY.model_copy(update={"epochs": 2})
    busy = [
        multiprocessing.get_context("spawn").Process(target=spin, args=(1e9,), daemon=True)
        for _ in range(args.busy)
    ]
    for p in busy:
        p.start()
    failures, started = 0, time.perf_counter()
    try:
        for run in range(1, args.runs + 1):
            try:
                train_segmentation(
                    train, validation, params, spacing_mm=SPACING, seed=0, processes=2
                )
            except DistributedTrainingError as err:
                failures += 1
                print(f"run {run}: {err}", flush=True)
    finally:
        for p in busy:
            p.terminate()
    each = (time.perf_counter() - started) / args.runs
    print(f"{failures} of {args.runs} runs failed ({args.busy} busy processes, {each:.1f} s a run)")


if __name__ == "__main__":
    main()
