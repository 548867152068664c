"""The whole pipeline on realistic studies: each stage against its floor, `radflow ingest`
against its own stage functions, and studies per hour, in one run.

Usage: python bench/realistic_bench.py [--studies 2] [--j2k] [--workdir DIR] [--skip-ingest]
       [--skip-dask] [--repeats 3] [--pyradiomics-path DIR]

Studies: two axial CT series of 512 x 512 x 300 at 0.7 x 0.7 x 1.25 mm each, the second the
first moved by a rigid motion of a few mm and degrees (radflow.synth's "post-contrast"
series), a body with two lungs and a 12-24 mm bright nodule, written as DICOM with a
scanner-like PHI header. The region of interest comes from the rule (the demo's: largest
blob above 80 HU), which finds the bright nodule. `--j2k` adds a JPEG 2000 lossless copy of
the first study (pydicom + pylibjpeg-openjpeg), read by radflow's reader and by SimpleITK.

Per stage, the same work without radflow around it (the floor):
- anonymize: plain pydicom read + write of the study's files;
- volumes (register + ROI + preprocess): a bare SimpleITK read of its two series and a
  linear resample of each to 1.5 mm;
- reader (`radflow.imaging.read.read_series`): SimpleITK's ImageSeriesReader of the same
  files, float32 out as radflow's;
- features: pyradiomics' default feature set on the same image and ROI when it imports (it
  does not install from PyPI here; `--pyradiomics-path` adds a folder where one was built),
  else radflow's own `extract` on the volume already in memory.
Stage functions are called as the flows call them (`radflow.stages.run_stage` on a local
folder lake); `radflow ingest` runs as a user runs it (a new process, Prefect's temporary
server, the local task runner; cold on a new lake and a new Prefect home, then warm, then
cold on another new lake with that Prefect home), against the sum of the stage functions on
the same delivery, and the floor of a warm run: a bare Prefect flow with one cached task
(also a new process with its own temporary server). Studies per hour come from the cold
ingests into a new lake with the Prefect home already made, with the local task runner and
with a 2-worker Dask cluster (`--task-runner dask`); peak memory is each process's largest
resident set, sampled every 0.2 s (psutil).

Seconds are one run each (a stage's total over the studies divided by their number), except
a second volumes row (each study's stage again with its output removed, alternating with its
floor, best of `--repeats` each), the reader rows (best of 2, alternating), the features
floor (best of 3: pyradiomics' first call in a process sets itself up), and the cold-lake
ingest and the stage functions it is compared with (best of `--repeats`, alternating).
Everything runs in `--workdir` (default: a new temporary folder, removed at the end).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = COLUMNS = 512
SLICES = 300
PIXEL_MM, SLICE_MM = 0.7, 1.25
TARGET_MM = 1.5  # the volumes stage's default spacing (PreprocessParams.spacing_mm)


# --------------------------------------------------------------------------- the studies


def generate(inbox: Path, studies: int, seed: int, size: tuple[int, int, int]) -> list[Any]:
    """`studies` two-series studies under `inbox` (radflow.synth's writer and phantom)."""
    from radflow import synth

    spec = synth.SynthSpec(
        studies=studies,
        rows=size[1],
        columns=size[0],
        slices=size[2],
        pixel_spacing=PIXEL_MM,
        slice_thickness=SLICE_MM,
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    written, taken = [], set[str]()
    for n in range(studies):
        patient = synth._new_patient(rng, taken)
        taken.add(patient.patient_id)
        date = dt.date(2024, 1, 8) + dt.timedelta(days=9 * n)
        # synth gives study i a second, rigidly moved series when i = 1 (mod 3): its private
        # writer is called for those indices only, so every study here has two series.
        written.append(synth._write_study(inbox, spec, rng, 3 * n + 1, patient, date, n % 2))
    return written


def _to_j2k(job: tuple[Path, Path]) -> None:
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    source, target = job
    ds = pydicom.dcmread(source)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)


def j2k_copy(files: list[Path], source_root: Path, target_root: Path) -> list[Path]:
    """A JPEG 2000 lossless copy of `files` (two processes: the encoder holds the GIL)."""
    from concurrent.futures import ProcessPoolExecutor

    targets = [target_root / f.relative_to(source_root) for f in files]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_to_j2k, zip(files, targets, strict=True), chunksize=16))
    return targets


def series_files(study: Any) -> list[list[Path]]:
    """The study's two image series, each in slice order (synth writes IM0001.. by z)."""
    by_folder: dict[Path, list[Path]] = {}
    for path in study.files:
        by_folder.setdefault(path.parent, []).append(path)
    return [sorted(by_folder[folder]) for folder in sorted(by_folder)]


# --------------------------------------------------------------------------- environment


def radflow_env(workdir: Path, name: str) -> dict[str, str]:
    """The environment of one lake: its store, cache, re-identification map, Prefect home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "RADFLOW_STORE_URL": f"file://{workdir / name / 'lake'}",
            "RADFLOW_SECRET_FILE": str(workdir / "secret.key"),
            "RADFLOW_CACHE_DIR": str(workdir / name / "cache"),
            "RADFLOW_DEID__REID_DIR": str(workdir / name / "reid"),
            "RADFLOW_PREPROCESS__ROI_SOURCES": '["rule"]',
            "PREFECT_HOME": str(workdir / name / "prefect"),
        }
    )
    return env


@contextmanager
def radflow_settings(workdir: Path, name: str) -> Iterator[Any]:
    from radflow.config import load_settings

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(radflow_env(workdir, name))
    try:
        yield load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --------------------------------------------------------------------------- timing


@dataclass
class Row:
    stage: str
    radflow_s: float
    floor_s: float | None
    floor: str

    @property
    def ratio(self) -> str:
        return f"{self.radflow_s / self.floor_s:.2f}" if self.floor_s else ""


@dataclass
class Timer:
    totals: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0
        return out


def best_of(n: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class PeakMemory:
    """Each process's largest resident set in the tree under `pid`, sampled (psutil)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peak: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _kind(cmdline: list[str], is_root: bool) -> str:
        text = " ".join(cmdline)
        if is_root:
            return "flow process (radflow ingest)"
        if "uvicorn" in text or "prefect.server" in text:
            return "Prefect temporary server"
        if "resource_tracker" in text:
            return "multiprocessing resource tracker"
        if "spawn_main" in text or "forkserver" in text:
            return "Dask worker"
        return "other"

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    if proc.pid not in self.peak:
                        kind = self._kind(proc.cmdline(), proc.pid == self.root.pid)
                    else:
                        kind = self.peak[proc.pid][0]
                except psutil.Error:
                    continue
                if rss > self.peak.get(proc.pid, ("", 0))[1]:
                    self.peak[proc.pid] = (kind, rss)
            self._stop.wait(0.2)

    def stop(self) -> list[tuple[str, int]]:
        self._stop.set()
        self._thread.join()
        return sorted(self.peak.values())


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, studies: int
) -> tuple[float, list[tuple[str, int]]]:
    """`radflow ARGS` in a new process; it must say it ingested every study."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "radflow.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    memory = PeakMemory(proc.pid)
    out, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    peaks = memory.stop()
    text = out.decode(errors="replace")
    if proc.returncode != 0 or f"ingested {studies} stud" not in text:
        raise SystemExit(f"radflow {args[0]} did not ingest every study:\n{text[-3000:]}")
    return seconds, peaks


BARE_FLOW = textwrap.dedent(
    """
    from prefect import flow, task
    from prefect.cache_policies import INPUTS

    @task(cache_policy=INPUTS)
    def work(x: int) -> int:
        return x + 1

    @flow
    def bare() -> int:
        return work(1)

    if __name__ == "__main__":
        bare()
    """
)


def bare_prefect_flow(workdir: Path) -> tuple[float, float]:
    """A flow with one cached task, cold then warm, each a new process with its own
    temporary server (radflow's Prefect settings, a new Prefect home)."""
    from radflow.cli import _PREFECT_DEFAULTS

    script = workdir / "bare_flow.py"
    script.write_text(BARE_FLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(_PREFECT_DEFAULTS)
    env["PREFECT_HOME"] = str(workdir / "bare" / "prefect")
    shutil.rmtree(workdir / "bare", ignore_errors=True)
    (workdir / "bare" / "prefect").mkdir(parents=True)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, str(script)], env=env, cwd=workdir, check=True, capture_output=True
        )
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


# --------------------------------------------------------------------------- floors


def pydicom_copy(files: list[Path], out: Path) -> None:
    import pydicom

    out.mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(files):
        pydicom.dcmread(path).save_as(out / f"{k:05d}.dcm", enforce_file_format=True)


def sitk_read(files: list[Path]) -> Any:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def sitk_read_resample(series: list[list[Path]]) -> None:
    from imaging_bench import bare_resample

    for files in series:
        bare_resample(sitk_read(files), TARGET_MM)


def pyradiomics_extractor() -> Any | None:
    try:
        from radiomics import featureextractor, setVerbosity
    except ImportError:
        return None
    setVerbosity(40)  # errors only
    return featureextractor.RadiomicsFeatureExtractor(binWidth=25)


# --------------------------------------------------------------------------- the run


def direct_stages(
    workdir: Path, inbox: Path, studies: list[Any], timer: Timer, name: str = "direct"
) -> tuple[list[tuple[str, str, str]], Any]:
    """fetch -> anonymize -> preprocess -> features -> catalog, as the flows call them, into
    the lake `name`; each study's de-identified, volume and feature-row keys."""
    from radflow.lake import Lake
    from radflow.stages import anonymize, features, preprocess, run_stage
    from radflow.stages.catalog import update_catalog
    from radflow.stages.fetch import fetch_delivery
    from radflow.store import LocalStore, open_store

    with radflow_settings(workdir, name) as settings:
        lake = Lake(open_store(settings.store_url))
        fetched = timer(
            "fetch",
            fetch_delivery,
            LocalStore(inbox),
            "",
            settings.cache_dir,
            settings.max_series_voxels,
        )
        done = []
        for ref in fetched.studies:
            deid = timer("anonymize", run_stage, anonymize, lake, settings, [ref]).key
            volume = timer("volumes", run_stage, preprocess, lake, settings, [deid, ""])
            if volume.key is None:
                reason = volume.quarantined.reason if volume.quarantined else "?"
                raise SystemExit(f"a study was quarantined by the volumes stage: {reason}")
            row = timer("features", run_stage, features, lake, settings, [volume.key, deid]).key
            done.append((deid, volume.key, row))
        timer("catalog", update_catalog, lake, [row for _, _, row in done])
    return done, lake


def volumes_best_of(
    workdir: Path, lake: Any, done: list[tuple[str, str, str]], series: list[Any], repeats: int
) -> tuple[float, float]:
    """The volumes stage again on each study, its output removed first, alternating with its
    floor: per study, the best of `repeats` each. The first pass of `direct_stages` is also
    each process's first call of the stage (its thread pools, the QC figure's imports)."""
    from radflow.stages import preprocess, run_stage

    stage, floor_s = [1e9] * len(done), [1e9] * len(done)
    with radflow_settings(workdir, "direct") as settings:
        for _ in range(repeats):
            for k, (deid, volume, _) in enumerate(done):
                for info in list(lake.store.list(volume + "/")):
                    lake.store.delete(info.key)
                t0 = time.perf_counter()
                again = run_stage(preprocess, lake, settings, [deid, ""]).key
                stage[k] = min(stage[k], time.perf_counter() - t0)
                if again != volume:
                    raise SystemExit("the volumes stage gave another address the second time")
                t0 = time.perf_counter()
                sitk_read_resample(series[k])
                floor_s[k] = min(floor_s[k], time.perf_counter() - t0)
    return sum(stage) / len(done), sum(floor_s) / len(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=2)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--size", default=f"{COLUMNS}x{ROWS}x{SLICES}", help="x, y, z voxels")
    parser.add_argument("--j2k", action="store_true", help="also a JPEG 2000 copy (+2-3 min)")
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temp folder)")
    parser.add_argument("--skip-ingest", action="store_true", help="no Prefect runs")
    parser.add_argument("--skip-dask", action="store_true", help="no Dask ingest")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="cold-lake ingests, each after the stage functions on another new lake: the row"
        " is the best of each (one run of each moved by up to 20%% here)",
    )
    parser.add_argument("--pyradiomics-path", type=Path, action="append", default=[])
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    for folder in args.pyradiomics_path:
        sys.path.append(str(folder.resolve()))

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="radflow-realistic-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    import SimpleITK as sitk

    from radflow.demo import ensure_secret
    from radflow.features.radiomics import extract
    from radflow.imaging.read import read_series

    n = args.studies
    ensure_secret(workdir / "secret.key")
    inbox = workdir / "inbox"
    if inbox.exists():
        shutil.rmtree(inbox)
    t0 = time.perf_counter()
    size = tuple(int(v) for v in args.size.split("x"))
    studies = generate(inbox, n, args.seed, (size[0], size[1], size[2]))
    generated = time.perf_counter() - t0
    series = [series_files(s) for s in studies]
    mb = sum(f.stat().st_size for s in studies for f in s.files) / 1e6
    print(
        f"generated {n} studies ({len(studies[0].files)} files, {mb / n:.0f} MB each) "
        f"in {generated:.0f} s",
        flush=True,
    )
    j2k: list[Path] = []
    if args.j2k:
        t0 = time.perf_counter()
        j2k = j2k_copy(series[0][0], inbox, workdir / "j2k")
        print(
            f"JPEG 2000 copy of one series in {time.perf_counter() - t0:.0f} s "
            f"({sum(f.stat().st_size for f in j2k) / 1e6:.0f} MB)",
            flush=True,
        )

    # The stage functions, then each stage's floor on the same files.
    timer = Timer()
    for name in ("direct", "cli", "cli-new-lake-0", "dask"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    done, lake = direct_stages(workdir, inbox, studies, timer)
    direct_total = sum(timer.totals.values())
    print(
        "stage functions: " + ", ".join(f"{k} {v:.1f} s" for k, v in timer.totals.items()),
        flush=True,
    )

    floor = Timer()
    for k in range(n):
        files = [f for s in series[k] for f in s]
        floor("anonymize", pydicom_copy, files, workdir / "floor" / f"study{k}")
        floor("volumes", sitk_read_resample, series[k])
    shutil.rmtree(workdir / "floor", ignore_errors=True)

    first = series[0][0]
    reader_s = sitk_s = 0.0
    for _ in range(2):  # alternating, best of 2 each
        reader_s = min(reader_s or 1e9, best_of(1, lambda: read_series(first)))
        sitk_s = min(sitk_s or 1e9, best_of(1, lambda: sitk_read(first)))
    j2k_rows = []
    if j2k:
        r = min(best_of(1, lambda: read_series(j2k)) for _ in range(2))
        s = min(best_of(1, lambda: sitk_read(j2k)) for _ in range(2))
        j2k_rows.append(Row("reader, JPEG 2000 series", r, s, "SimpleITK ImageSeriesReader"))

    volumes_again, floor_again = volumes_best_of(workdir, lake, done, series, args.repeats)
    volumes = [(lake.image(v, "image"), lake.image(v, "mask")) for _, v, _ in done]
    extractor = pyradiomics_extractor()
    if extractor is not None:
        feature_floor = sum(best_of(3, partial(extractor.execute, im, m)) for im, m in volumes)
        feature_floor_name = "pyradiomics, default features, same image and ROI"
    else:
        feature_floor = sum(best_of(3, partial(extract, im, m)) for im, m in volumes)
        feature_floor_name = "radflow's extract on the volume in memory (no pyradiomics)"
    voxels = [int(sitk.GetArrayViewFromImage(m).sum()) for _, m in volumes]

    rows = [
        Row(
            "anonymize (de-identify)",
            timer.totals["anonymize"] / n,
            floor.totals["anonymize"] / n,
            "pydicom read + write of the same files",
        ),
        Row(
            "volumes (register + ROI + preprocess)",
            timer.totals["volumes"] / n,
            floor.totals["volumes"] / n,
            "SimpleITK read + resample of the two series",
        ),
        Row(
            f"volumes again, best of {args.repeats} (its output removed each time)",
            volumes_again,
            floor_again,
            f"the same floor, alternating, best of {args.repeats}",
        ),
        Row("reader, uncompressed series", reader_s, sitk_s, "SimpleITK ImageSeriesReader"),
        *j2k_rows,
        Row("features", timer.totals["features"] / n, feature_floor / n, feature_floor_name),
    ]

    ingest_rows: list[Row] = []
    throughput: list[tuple[str, float, list[tuple[str, int]]]] = []
    if not args.skip_ingest:
        env = radflow_env(workdir, "cli")
        cold, _ = run_cli(["ingest", str(inbox)], env, workdir, n)
        warm, _ = run_cli(["ingest", str(inbox)], env, workdir, n)
        # The first ingest above also made its Prefect home (the server's database migrations,
        # 15-30 s here), once per machine; a user's next delivery is cold for a new lake only.
        prefect_home = env["PREFECT_HOME"]
        cold_lakes: list[float] = []
        directs = [direct_total]
        for k in range(args.repeats):
            if k:  # alternating with the ingests, so that both see the same machine
                again = Timer()
                direct_stages(workdir, inbox, studies, again, f"direct-{k}")
                directs.append(sum(again.totals.values()))
                shutil.rmtree(workdir / f"direct-{k}", ignore_errors=True)
            env = radflow_env(workdir, f"cli-new-lake-{k}") | {"PREFECT_HOME": prefect_home}
            seconds, memory = run_cli(["ingest", str(inbox)], env, workdir, n)
            if not cold_lakes or seconds < min(cold_lakes):
                cold_lake_mem = memory
            cold_lakes.append(seconds)
            if k:
                shutil.rmtree(workdir / f"cli-new-lake-{k}", ignore_errors=True)
        cold_lake = min(cold_lakes)
        print(
            "cold-lake ingests s: "
            + ", ".join(f"{v:.2f}" for v in cold_lakes)
            + "; stage functions s: "
            + ", ".join(f"{v:.2f}" for v in directs),
            flush=True,
        )
        bare_cold, bare_warm = bare_prefect_flow(workdir)
        ingest_rows += [
            Row(
                f"radflow ingest, cold ({n} studies)",
                cold,
                direct_total,
                "the same stage functions called directly",
            ),
            Row(
                f"radflow ingest, cold lake, Prefect home already made ({n} studies), best of"
                f" {len(cold_lakes)}",
                cold_lake,
                min(directs),
                f"the same stage functions called directly, best of {len(directs)}",
            ),
            Row(
                "radflow ingest, warm (all Cached)",
                warm,
                bare_warm,
                "a bare Prefect flow with one cached task, warm",
            ),
            Row("bare Prefect flow, cold", bare_cold, None, ""),
        ]
        throughput.append(("local task runner (threads)", cold_lake, cold_lake_mem))
        if not args.skip_dask:
            env = radflow_env(workdir, "dask") | {"PREFECT_HOME": prefect_home}
            dask_s, dask_mem = run_cli(
                ["ingest", str(inbox), "--task-runner", "dask"], env, workdir, n
            )
            ingest_rows.append(
                Row(
                    f"radflow ingest, cold lake, 2 Dask workers ({n} studies)",
                    dask_s,
                    direct_total,
                    "the same stage functions called directly",
                )
            )
            throughput.append(("2-worker Dask cluster", dask_s, dask_mem))

    print(
        f"\n### {n} studies of 2 x {args.size} "
        f"({PIXEL_MM}x{PIXEL_MM}x{SLICE_MM} mm), ROI voxels {voxels}\n"
    )
    print("| stage | radflow s | floor s | ratio | floor |\n| --- | ---: | ---: | ---: | --- |")
    for row in rows + ingest_rows:
        floor_s = f"{row.floor_s:.2f}" if row.floor_s else ""
        print(f"| {row.stage} | {row.radflow_s:.2f} | {floor_s} | {row.ratio} | {row.floor} |")
    print(
        "\nStage functions called directly, whole delivery: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in timer.totals.items())
        + f"; sum {direct_total:.2f} s"
    )
    if throughput:
        print("\n| task runner | cold ingest s | studies/hour | peak resident MB per process |")
        print("| --- | ---: | ---: | --- |")
        for name, seconds, peaks in throughput:
            peak_mb = "; ".join(
                f"{kind} {rss / 2**20:.0f}" for kind, rss in peaks if rss >= 50 * 2**20
            )
            print(f"| {name} | {seconds:.1f} | {n / seconds * 3600:.0f} | {peak_mb} |")


if __name__ == "__main__":
    main()
