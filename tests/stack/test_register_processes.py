"""Registration is deterministic across processes and core counts: two child processes, one
with 8 ITK threads and one with 1, write byte-identical transforms and QC images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel
import pytest

pytestmark = pytest.mark.stack

ANATOMICAL = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
ROOT = Path(__file__).resolve().parents[2]


_DETERMINISM = """
import hashlib, json, sys
import SimpleITK as sitk
from radflow.imaging.qc import checkerboard_png
from radflow.imaging.register import register, resample_onto, write_transform
fixed = sitk.ReadImage(sys.argv[1], sitk.sitkFloat32)
motion = sitk.Euler3DTransform((-1.0, 2.0, 3.0), 0.12, -0.2, 0.1, (5.0, -4.0, 3.0))
moving = sitk.Resample(fixed, motion.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
out = {}
for kind in ("rigid", "affine"):
    reg = register(fixed, moving, kind)
    again = register(fixed, moving, kind)
    assert again.transform.GetParameters() == reg.transform.GetParameters(), kind
    path = write_transform(reg, sys.argv[2] + "." + kind + ".tfm")
    png = checkerboard_png(fixed, resample_onto(moving, fixed, reg.transform))
    out[kind] = {
        "parameters": list(reg.transform.GetParameters()),
        "fixed": list(reg.transform.GetFixedParameters()),
        "metric": reg.metric,
        "iterations": reg.iterations,
        "tfm": hashlib.sha256(path.read_bytes()).hexdigest(),
        "png": hashlib.sha256(png).hexdigest(),
    }
print(json.dumps(out))
"""


def test_two_processes_give_identical_results(tmp_path: Path) -> None:
    """Separate processes (fresh ITK state, random sampling reseeded): byte-identical output.

    One process has 8 ITK threads, the other 1: the result must not depend on the core count
    (ITK's multi-threaded Mattes sums do, run to run, unless registration runs on one thread).
    """
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _DETERMINISM, ANATOMICAL, str(tmp_path / f"run{n}")],
                env={
                    **os.environ,
                    "PYTHONPATH": str(ROOT),
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": threads,
                },
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for n, threads in enumerate(("8", "1"))
    ]
    assert runs[0] == runs[1]
    assert runs[0]["rigid"]["parameters"] != runs[0]["affine"]["parameters"][:6]
    for kind in ("rigid", "affine"):
        a, b = (tmp_path / f"run{n}.{kind}.tfm" for n in range(2))
        assert a.read_bytes() == b.read_bytes()
