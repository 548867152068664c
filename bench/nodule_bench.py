"""Radiomics of a 20 mm nodule in a 512 x 512 x 300 CT: import, first call and later calls of
`radflow.features.radiomics.extract`, in this (fresh) process.

Usage: python bench/nodule_bench.py   (run it in a new process each time: the first call is
the point). The case is the one `tests/unit/features/test_roi_crop.py` checks
(`tests/support/nodule.py`), built before radflow is imported so that the import is timed
on its own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.nodule import nodule_in_ct  # noqa: E402


def main() -> None:
    image, mask = nodule_in_ct()
    t = time.perf_counter()
    from radflow.features.radiomics import extract

    imported = time.perf_counter() - t
    times = []
    for _ in range(4):
        t = time.perf_counter()
        extract(image, mask)
        times.append(time.perf_counter() - t)
    print(
        f"import {imported:.2f} s | first call {times[0]:.3f} s | "
        f"later calls {min(times[1:]):.3f} s (best of 3)"
    )


if __name__ == "__main__":
    main()
