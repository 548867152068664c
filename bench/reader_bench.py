"""radflow's DICOM series reader against SimpleITK's ImageSeriesReader (GDCM) on the same files.

Usage: python bench/reader_bench.py [--workdir DIR] [--slices 300] [--size 512] [--repeats 5]
                                    [--variants raw,j2k] [--before REV]

Writes a scanner-like int16 CT series (`radflow.synth_ct.write_ct_slices`: a long private
header, padding after the pixels) once under --workdir, and a JPEG 2000 lossless copy of it
(pydicom's encoder). Each repeat reads the series with radflow (`read_series`, default
settings: float32 with rescale, worker processes for a large compressed series) and with
SimpleITK (file order from GDCM's own sorter, worked out before the timing), alternately, so
both see the same machine load. Prints the best and the median of each and their ratios, the
first (cold) radflow read separately where worker processes start, and checks that both
readers give the same values. Memory: radflow's peak resident set during one read above the
resident set before it (Linux VmHWM; worker processes not counted). With --before REV, the
reader as it was at git revision REV (its radflow/imaging/read.py) is timed in the same loop,
and a compressed series is also read with `decode_workers=0` (in this process).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from at_revision import module_at  # noqa: E402
from imaging_bench import peak_extra_mib, timed  # noqa: E402

from radflow.imaging.read import read_series  # noqa: E402
from radflow.synth_ct import write_ct_slices  # noqa: E402


def _series(workdir: Path, slices: int, size: int, variant: str) -> list[Path]:
    """The variant's files (written once, reused by later runs with the same arguments)."""
    raw = workdir / f"raw-{size}x{slices}"
    if not (raw / "done").exists():
        t0 = time.perf_counter()
        write_ct_slices(raw, slices, size=size, per_series=slices)
        (raw / "done").touch()
        print(f"wrote {slices} slices in {time.perf_counter() - t0:.0f} s")
    files = sorted(p for p in raw.rglob("*.dcm"))
    if variant == "raw":
        return files
    out = workdir / f"{variant}-{size}x{slices}"
    if not (out / "done").exists():
        t0 = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        for path in files:
            ds = pydicom.dcmread(path)
            ds.compress(JPEG2000Lossless, generate_instance_uid=False)
            ds.save_as(out / path.name, enforce_file_format=True)
        (out / "done").touch()
        print(f"compressed {slices} slices to JPEG 2000 in {time.perf_counter() - t0:.0f} s")
    return sorted(out.glob("*.dcm"))


def _reader_at(revision: str) -> Callable[[list[Path]], sitk.Image]:
    """`read_series` as radflow/imaging/read.py had it at git `revision`."""
    reader: Callable[[list[Path]], sitk.Image] = module_at(
        revision, "radflow/imaging/read.py", "read_before"
    ).read_series
    return reader


def _row(label: str, mine: list[float], peer: list[float], *extra: str) -> str:
    best, median = min(mine) / min(peer), statistics.median(mine) / statistics.median(peer)
    cells = [
        label,
        f"{min(mine):.2f} / {statistics.median(mine):.2f}",
        f"{min(peer):.2f} / {statistics.median(peer):.2f}",
        f"{best:.2f} / {median:.2f}",
        *extra,
    ]
    return "| " + " | ".join(cells) + " |"


def bench(
    files: list[Path],
    repeats: int,
    label: str,
    before: Callable[[list[Path]], sitk.Image] | None,
) -> None:
    sitk_order = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(files[0].parent)))
    assert len(sitk_order) == len(files)

    def simpleitk() -> sitk.Image:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk_order)
        return reader.Execute()

    others: dict[str, Callable[[], sitk.Image]] = {}
    if before is not None:
        others["the reader before"] = lambda: before(files)
        if "JPEG" in label:
            others["decode_workers=0"] = lambda: read_series(files, decode_workers=0)

    cold, ours = timed(lambda: read_series(files))  # starts workers where the series needs them
    theirs = simpleitk()
    a = sitk.GetArrayViewFromImage(ours)
    b = sitk.GetArrayViewFromImage(theirs).astype(np.float32)
    same = a.shape == b.shape and bool(np.array_equal(a, b))
    for fn in others.values():  # the same bits as the default reader
        other = fn()  # held: a view does not keep its image alive
        same = same and sitk.GetArrayViewFromImage(other).tobytes() == a.tobytes()
        del other
    del ours, theirs, a, b
    mine: list[float] = []
    peer: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in others}
    for _ in range(repeats):
        mine.append(timed(lambda: read_series(files))[0])
        peer.append(timed(simpleitk)[0])
        for name, fn in others.items():
            times[name].append(timed(fn)[0])
    memory = peak_extra_mib(lambda: read_series(files))
    print(_row(label, mine, peer, f"{cold:.2f}", f"{memory:.0f}", "yes" if same else "NO"))
    for name, seconds in times.items():
        print(_row(f"{label}, {name}", seconds, peer, "", "", ""), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rf-reader")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default="raw,j2k")
    parser.add_argument("--before", help="also time the reader of this git revision")
    args = parser.parse_args()
    before = _reader_at(args.before) if args.before else None
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    print(
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"ITK threads {threads}; SimpleITK {sitk.Version.VersionString()}, "
        f"pydicom {pydicom.__version__}, numpy {np.__version__}"
    )
    series = {v: _series(args.workdir, args.slices, args.size, v) for v in args.variants.split(",")}
    print(f"\n{args.size}x{args.size}x{args.slices} int16 CT; seconds best / median of "
          f"{args.repeats}, alternating\n")  # fmt: skip
    print(
        "| series | radflow s | SimpleITK s | × SimpleITK | radflow cold s | "
        "radflow peak extra MiB | same values |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    names = {"raw": "uncompressed (explicit VR LE)", "j2k": "JPEG 2000 lossless"}
    for variant, files in series.items():
        bench(files, args.repeats, names.get(variant, variant), before)


if __name__ == "__main__":
    main()
