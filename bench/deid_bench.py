"""De-identification throughput and leaks: radflow against dicognito, deid and plain pydicom.

Usage: python bench/deid_bench.py [--repeats 3] [--synth-repeats 3] [--slices 300] [--size 512]
       [--skip-synth] [--ct-slices 1000] [--ct-repeats 3] [--skip-ct] [--deid-on-ct]
       [--phases] [--profile] [--show-leaks]

One run, the same corpora for every tool:

(a) pydicom's bundled test files (`pydicom/data/test_files`, recursively) and charset files,
    only those that a plain `pydicom.dcmread` reads, copied flat into a temporary folder under
    unique names (so every tool gets the same list and no two outputs collide);
(b) one synthetic CT series of `--slices` slices of `--size`² made with `radflow.synth`;
(c) `--ct-slices` scanner-like CT slices of `--size`² (`radflow.synth_ct`: the header of a
    real GE scanner's slice, pydicom's CT_small.dcm, with 258 elements of which 179 private
    and padding after the pixels; int16 pixels with CT noise that compress about 2:1), 250 to
    a series, one patient each: the pixel-heavy corpus that measures the I/O path. deid (about
    40 ms a file) runs on it only with `--deid-on-ct`.

Tools, each writing every output into a fresh temporary folder per run:

- radflow: `anonymize_tree(src, dst, config, processes)`, with `os.cpu_count()` processes and
  with 1 (the whole call is timed: file walk, pool start, workers, writes);
- dicognito: its Python API in this process (one `Anonymizer()` for the corpus, `dcmread`,
  `anonymize`, `save_as(enforce_file_format=True)` as its CLI does): the API avoids timing a
  process start; single process;
- deid: its default recipe through the documented `get_identifiers` + `replace_identifiers`
  (`save=True, output_folder=...`), one file per call so a failure costs only that file; deid's
  logger is silenced (its default level prints every debug line); single process;
- plain pydicom: `dcmread` + `save_as`, no changes: the floor; single process.

Times are the best of `--repeats` rounds (`--synth-repeats` on corpus b, `--ct-repeats` on c;
each round runs every tool once, so changing load from other users hits all tools alike);
files/s and MB/s (MB = 10^6 bytes) are input files and input bytes over that time, "written"
the output files the tool wrote; "× dicognito" and "× plain" are speed ratios (> 1: faster).
Files a tool failed on (an exception, no output, or radflow's quarantine) are counted per tool
and still count as processed input.

Leak check, on the outputs of each tool's last run: an output file leaks when the original
PatientName or PatientID (raw bytes, when at least 3 long) or the original StudyDescription or
SeriesDescription (verbatim, at least 3 long) still appears in its bytes, pixel data excluded
(so chance matches in pixel values do not count; deflated files are inflated first).

`--phases` adds the CPU time per file of each phase (read, parse and checks, de-identify,
encode, write; plain pydicom's read and write beside) on the last corpus, one process.
`--profile` adds a cProfile of `Deidentifier.__call__` over corpus (a), single process.
Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radflow.dicom.batch import anonymize_tree, deidentify_bytes, read_dicom  # noqa: E402
from radflow.dicom.deid import DeidConfig, Deidentifier  # noqa: E402
from radflow.errors import QuarantineError  # noqa: E402

SECRET = b"radflow-deid-bench-secret-not-for-production"
PIXEL_DATA = 0x7FE00010
NAME_ID = ("PatientName", "PatientID")
DESCRIPTIONS = ("StudyDescription", "SeriesDescription")
MIN_TOKEN = 3
# The radflow code on the measured path (for the "code measured" note).
MEASURED_CODE = ("radflow/dicom", "radflow/keys.py", "radflow/errors.py", "radflow/lake/records.py")


@dataclass
class Corpus:
    key: str
    title: str
    src: Path  # what anonymize_tree walks: exactly `files`
    files: list[Path]
    nbytes: int


@dataclass
class RunResult:
    failures: Counter[str] = field(default_factory=Counter)
    outputs: dict[Path, Path] = field(default_factory=dict)  # input -> output written


@dataclass
class Measurement:
    tool: str
    processes: int
    times: list[float]
    failures: Counter[str]
    leaks: tuple[int, int, int, int] | None = None  # checked, name/id, description, any
    outputs: dict[Path, Path] = field(default_factory=dict)  # the last run's

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def written(self) -> int:
        return len(self.outputs)


# ---------------------------------------------------------------------------- corpora


def corpus_pydicom(work: Path) -> Corpus:
    data = Path(pydicom.__file__).parent / "data"
    found = sorted(p for p in (data / "test_files").rglob("*") if p.is_file())
    found += sorted(p for p in (data / "charset_files").rglob("*") if p.is_file())
    src = work / "corpus-a"
    src.mkdir()
    files: list[Path] = []
    for path in found:
        try:
            pydicom.dcmread(path)
        except Exception:
            continue
        target = src / f"{len(files):04d}_{path.name}"
        shutil.copyfile(path, target)
        files.append(target)
    nbytes = sum(f.stat().st_size for f in files)
    title = (
        f"(a) pydicom test + charset files: {len(files)} of {len(found)} files read by "
        f"dcmread, {nbytes / 1e6:.2f} MB"
    )
    return Corpus("a", title, src, files, nbytes)


def corpus_synth(work: Path, size: int, slices: int) -> tuple[Corpus, float]:
    from radflow.synth import SynthSpec, synthesize

    spec = SynthSpec(studies=1, rows=size, columns=size, slices=slices)
    t0 = time.perf_counter()
    synthesize(work / "corpus-b", work / "labels.csv", spec)
    seconds = time.perf_counter() - t0
    files = sorted(p for p in (work / "corpus-b").rglob("*") if p.is_file())
    nbytes = sum(f.stat().st_size for f in files)
    title = (
        f"(b) synthetic CT series, {size}x{size}x{slices}: {len(files)} files, "
        f"{nbytes / 1e6:.1f} MB"
    )
    return Corpus("b", title, work / "corpus-b", files, nbytes), seconds


def corpus_ct(work: Path, size: int, slices: int) -> tuple[Corpus, float]:
    from radflow.synth_ct import write_ct_slices

    t0 = time.perf_counter()
    written = sorted(write_ct_slices(work / "corpus-c", slices, size=size))
    seconds = time.perf_counter() - t0
    # Unique names (every series has its IM0001.dcm): the peers write `out / path.name`.
    files = [path.rename(path.with_name(f"{i:04d}_{path.name}")) for i, path in enumerate(written)]
    nbytes = sum(f.stat().st_size for f in files)
    series = len({f.parent for f in files})
    title = (
        f"(c) scanner-like CT slices (radflow.synth_ct), {size}x{size} int16: {len(files)} "
        f"files in {series} series, {nbytes / 1e6:.1f} MB"
    )
    return Corpus("c", title, work / "corpus-c", files, nbytes), seconds


# ---------------------------------------------------------------------------- tools

CONFIG = DeidConfig(secret=SECRET)


def run_radflow(corpus: Corpus, out: Path, processes: int) -> RunResult:
    summary = anonymize_tree(corpus.src, out, CONFIG, processes=processes)
    if summary.files != len(corpus.files):
        raise RuntimeError(f"radflow walked {summary.files} files, expected {len(corpus.files)}")
    return RunResult(failures=Counter(f"quarantined: {q.reason}" for q in summary.quarantined))


def radflow_outputs(corpus: Corpus, out: Path) -> dict[Path, Path]:
    """Where anonymize_tree put each input: its own (keyed, deterministic) UIDs name the path."""
    deid = Deidentifier(CONFIG)
    found: dict[Path, Path] = {}
    taken: set[Path] = set()
    for path in corpus.files:
        try:
            _, ids = deidentify_bytes(read_dicom(path), deid)
        except QuarantineError:
            continue
        target = out / ids.study_uid / ids.series_uid / f"{ids.sop_uid}.dcm"
        if target.is_file() and target not in taken:  # one source per output: the first
            taken.add(target)
            found[path] = target
    return found


def run_dicognito(corpus: Corpus, out: Path) -> RunResult:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    result = RunResult()
    for path in corpus.files:
        target = out / path.name
        try:
            ds = pydicom.dcmread(path)
            anonymizer.anonymize(ds)
            ds.save_as(target, enforce_file_format=True)
        except Exception as err:
            result.failures[type(err).__name__] += 1
            continue
        result.outputs[path] = target
    return result


_DEID_SPLIT: dict[str, dict[str, float]] = {}  # corpus -> seconds per deid call, all runs


def run_deid(corpus: Corpus, out: Path) -> RunResult:
    from deid.config import DeidRecipe
    from deid.dicom import get_identifiers, replace_identifiers
    from deid.logger import bot

    bot.level = 0  # QUIET: deid's default level prints every debug line
    recipe = DeidRecipe()  # the default recipe
    result = RunResult()
    for path in corpus.files:
        target = out / path.name
        try:
            t0 = time.perf_counter()
            ids = get_identifiers([str(path)])
            t1 = time.perf_counter()
            replace_identifiers(
                [str(path)], ids=ids, deid=recipe, save=True, output_folder=str(out)
            )
            t2 = time.perf_counter()
            split = _DEID_SPLIT.setdefault(corpus.key, {})
            split["get_identifiers"] = split.get("get_identifiers", 0.0) + t1 - t0
            split["replace_identifiers"] = split.get("replace_identifiers", 0.0) + t2 - t1
        except (Exception, SystemExit) as err:
            result.failures[type(err).__name__] += 1
            continue
        if not target.is_file():
            result.failures["no output"] += 1
            continue
        result.outputs[path] = target
    bot.history.clear()
    return result


def run_plain(corpus: Corpus, out: Path) -> RunResult:
    result = RunResult()
    for path in corpus.files:
        target = out / path.name
        try:
            pydicom.dcmread(path).save_as(target)
        except Exception as err:
            result.failures[type(err).__name__] += 1
            continue
        result.outputs[path] = target
    return result


@dataclass
class Tool:
    name: str
    processes: int
    run: Callable[[Corpus, Path], RunResult]


def tools(with_deid: bool = True) -> list[Tool]:
    cores = os.cpu_count() or 1
    found = [
        Tool(f"radflow ({cores} proc)", cores, lambda c, o: run_radflow(c, o, cores)),
        Tool("radflow (1 proc)", 1, lambda c, o: run_radflow(c, o, 1)),
        Tool(f"dicognito {version('dicognito')} (API)", 1, run_dicognito),
        Tool(f"deid {version('deid')} (default recipe)", 1, run_deid),
        Tool("plain pydicom read+write", 1, run_plain),
    ]
    return [t for t in found if with_deid or not t.name.startswith("deid")]


# ---------------------------------------------------------------------------- leak check


def _raw(ds: pydicom.Dataset, keyword: str) -> bytes | None:
    tag = Tag(keyword)
    if tag not in ds:
        return None
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement):
        value = elem.value or b""
    else:
        value = str(elem.value or "").encode("utf-8", "ignore")
    value = value.strip(b" \x00")
    return value if len(value) >= MIN_TOKEN else None


def original_tokens(path: Path) -> tuple[set[bytes], set[bytes]]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    names = {v for k in NAME_ID if (v := _raw(ds, k))}
    texts = {v for k in DESCRIPTIONS if (v := _raw(ds, k))}
    return names, texts


def searchable(path: Path) -> bytes:
    """The file's bytes with the pixel data value cut out; a deflated dataset inflated."""
    data = path.read_bytes()
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:
        return data
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        start = 132 + 12 + int(meta.get("FileMetaInformationGroupLength", 0))
        try:
            return data[:start] + zlib.decompress(data[start:], -zlib.MAX_WBITS)
        except zlib.error:
            return data
    if PIXEL_DATA in ds:
        elem = ds.get_item(PIXEL_DATA)
        tell = getattr(elem, "value_tell", None)
        if isinstance(elem, RawDataElement) and tell is not None and elem.value is not None:
            return data[:tell] + data[tell + len(elem.value) :]
    return data


def leak_check(
    corpus: Corpus, outputs: dict[Path, Path], show: bool, label: str
) -> tuple[int, int, int, int]:
    """(outputs checked, with name/ID, with description, with either): per output file."""
    wanted: dict[Path, tuple[set[bytes], set[bytes]]] = {}
    for source, target in outputs.items():
        names, texts = original_tokens(source)
        have = wanted.setdefault(target, (set(), set()))
        have[0].update(names)
        have[1].update(texts)
    name_leaks = text_leaks = either = 0
    for target, (names, texts) in wanted.items():
        hay = searchable(target)
        leaked_names = sorted(n for n in names if n in hay)
        leaked_texts = sorted(t for t in texts if t in hay)
        name_leaks += bool(leaked_names)
        text_leaks += bool(leaked_texts)
        either += bool(leaked_names or leaked_texts)
        if show and (leaked_names or leaked_texts):
            print(f"  leak [{label}] {target.name}: {leaked_names + leaked_texts}", file=sys.stderr)
    return len(wanted), name_leaks, text_leaks, either


# ---------------------------------------------------------------------------- running


def run_once(tool: Tool, corpus: Corpus, work: Path) -> tuple[float, RunResult, Path]:
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    gc.collect()
    # The previous tool's outputs (530 MB on corpus c) would otherwise be written back to
    # disk, and its folder's removal finished, while the next tool runs.
    os.sync()
    t0 = time.perf_counter()
    result = tool.run(corpus, out)
    return time.perf_counter() - t0, result, out


def measure(
    corpus: Corpus, repeats: int, work: Path, show: bool, with_deid: bool = True
) -> list[Measurement]:
    """Every tool once per round, `repeats` rounds: load from other users hits all alike."""
    rows = [Measurement(t.name, t.processes, [], Counter()) for t in tools(with_deid)]
    for i in range(repeats):
        for tool, row in zip(tools(with_deid), rows, strict=True):
            seconds, result, out = run_once(tool, corpus, work)
            row.times.append(seconds)
            row.failures = result.failures
            if i == repeats - 1:  # leak check on the last run's outputs
                outputs = result.outputs
                if tool.name.startswith("radflow"):
                    outputs = radflow_outputs(corpus, out)
                row.outputs = outputs
                row.leaks = leak_check(corpus, outputs, show, f"{tool.name}, {corpus.key}")
            shutil.rmtree(out)
            print(f"  ({corpus.key}) round {i + 1}: {tool.name} {seconds:.2f} s", file=sys.stderr)
    return rows


def speed_table(corpus: Corpus, rows: list[Measurement]) -> str:
    dicognito = next(m for m in rows if m.tool.startswith("dicognito")).best
    plain = next(m for m in rows if m.tool.startswith("plain")).best
    n = len(corpus.files)
    lines = [
        f"### {corpus.title}",
        "",
        "| tool | procs | files | failed or refused | best s | runs s | written | files/s "
        "| MB/s | × dicognito | × plain |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in rows:
        runs = " / ".join(f"{t:.2f}" for t in m.times)
        lines.append(
            f"| {m.tool} | {m.processes} | {n} | {sum(m.failures.values())} | {m.best:.2f} "
            f"| {runs} | {m.written} | {n / m.best:.1f} | {corpus.nbytes / 1e6 / m.best:.2f} "
            f"| {dicognito / m.best:.2f} | {plain / m.best:.2f} |"
        )
    return "\n".join(lines)


def failure_lines(corpora: list[Corpus], results: dict[str, list[Measurement]]) -> str:
    lines = ["Failed or refused files by tool (the last run; every run gave the same):", ""]
    for corpus in corpora:
        for m in results[corpus.key]:
            if m.failures:
                detail = ", ".join(f"{k}: {v}" for k, v in sorted(m.failures.items()))
                lines.append(f"- ({corpus.key}) {m.tool}: {detail}")
    if len(lines) == 2:
        lines.append("- none")
    return "\n".join(lines)


def leak_table(corpora: list[Corpus], results: dict[str, list[Measurement]]) -> str:
    head = "| tool |"
    rule = "| --- |"
    for c in corpora:
        head += f" ({c.key}) outputs | ({c.key}) name/ID | ({c.key}) descr. | ({c.key}) leaks |"
        rule += " ---: | ---: | ---: | ---: |"
    lines = ["### Leak check (output files still holding original values)", "", head, rule]
    for m in results[corpora[0].key]:
        row = f"| {m.tool} |"
        for c in corpora:
            same = [r for r in results[c.key] if r.tool == m.tool]
            leaks = same[0].leaks if same else None
            row += " | | | |" if leaks is None else "".join(f" {v} |" for v in leaks)
        lines.append(row)
    return "\n".join(lines)


# Goals for radflow on all cores, as files/s ratios: issue 3's on (a) and (b), issue 15's on
# the scanner-like CT, where every file is written (2 processes: 2× dicognito, 1.6× plain).
GOALS = {"a": (2.5, 1.0), "b": (2.5, 1.0), "c": (2.0, 1.6)}


def goals(corpora: list[Corpus], results: dict[str, list[Measurement]]) -> str:
    lines = ["Goals for radflow (all cores), as ratios of files/s in the same run:", ""]
    for c in corpora:
        rows = results[c.key]
        radflow = rows[0]
        dicognito = next(m for m in rows if m.tool.startswith("dicognito"))
        plain = next(m for m in rows if m.tool.startswith("plain"))
        vs_d, vs_p = dicognito.best / radflow.best, plain.best / radflow.best
        want_d, want_p = GOALS[c.key]
        ok = "met" if vs_d >= want_d and vs_p >= want_p else "NOT met"
        lines.append(
            f"- ({c.key}) goal ≥ {want_d}× dicognito and ≥ {want_p}× plain: {vs_d:.2f}× "
            f"dicognito, {vs_p:.2f}× plain ({radflow.written} of {len(c.files)} written): {ok}"
        )
    return "\n".join(lines)


T = TypeVar("T")


def phase_split(corpus: Corpus, work: Path) -> str:
    """Where one process spends its CPU time per file, phase by phase (time.process_time,
    so other users' load does not count): radflow's path and plain pydicom's, same files."""
    import os as _os

    from radflow.dicom.batch import read_dicom_bytes
    from radflow.dicom.part10 import part10_chunks, write_chunks

    deid = Deidentifier(CONFIG)
    spent: dict[str, float] = {}
    out = Path(tempfile.mkdtemp(prefix="phases-", dir=work))

    def timed(phase: str, fn: Callable[[], T]) -> T:
        t0 = time.process_time()
        result = fn()
        spent[phase] = spent.get(phase, 0.0) + time.process_time() - t0
        return result

    def write(path: Path, chunks: list[bytes | memoryview]) -> None:
        fd = _os.open(path, _os.O_WRONLY | _os.O_CREAT | _os.O_TRUNC, 0o666)
        try:
            write_chunks(fd, chunks)
        finally:
            _os.close(fd)

    for i, path in enumerate(corpus.files):
        data = timed("radflow: read the file", path.read_bytes)
        ds = timed("radflow: parse + checks", lambda: read_dicom_bytes(data))  # noqa: B023
        timed("radflow: de-identify (Deidentifier)", lambda: deid(ds))  # noqa: B023
        chunks = timed("radflow: encode (part10)", lambda: part10_chunks(ds))  # noqa: B023
        timed("radflow: write the file", lambda: write(out / f"{i}.dcm", chunks))  # noqa: B023
        plain = timed("plain: dcmread", lambda: pydicom.dcmread(path))  # noqa: B023
        timed("plain: save_as", lambda: plain.save_as(out / f"p{i}.dcm"))  # noqa: B023
    shutil.rmtree(out)
    n = len(corpus.files)
    lines = [
        f"CPU per file, one process, corpus ({corpus.key}), {n} files (ms):",
        "",
        "| phase | ms/file |",
        "| --- | ---: |",
    ]
    for who in ("radflow", "plain"):
        total = 0.0
        for phase, seconds in spent.items():
            if phase.startswith(who):
                lines.append(f"| {phase} | {seconds / n * 1000:.3f} |")
                total += seconds
        lines.append(f"| **{who}: total** | **{total / n * 1000:.3f}** |")
    return "\n".join(lines)


def profile_deid(corpus: Corpus, top: int) -> str:
    """cProfile of Deidentifier.__call__ alone (files read beforehand), single process."""
    datasets = []
    for path in corpus.files:
        try:
            datasets.append(read_dicom(path))
        except QuarantineError:
            continue
    deid = Deidentifier(CONFIG)
    profiler = cProfile.Profile()
    called = 0
    t0 = time.perf_counter()
    for ds in datasets:
        profiler.enable()
        try:
            deid(ds)
            called += 1
        except QuarantineError:
            pass
        finally:
            profiler.disable()
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    head = f"Deidentifier.__call__ on {len(datasets)} datasets ({called} completed), {wall:.2f} s"
    return head + " (with profiler)\n" + buf.getvalue()


def code_state() -> str:
    """The commit measured, and whether the measured code differs from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", *MEASURED_CODE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"commit {head}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool on corpus (a)")
    parser.add_argument("--synth-repeats", type=int, default=3, help="runs per tool on (b)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of (b)")
    parser.add_argument("--slices", type=int, default=300, help="slices of (b)")
    parser.add_argument("--skip-synth", action="store_true", help="no corpus (b)")
    parser.add_argument("--ct-slices", type=int, default=1000, help="slices of (c)")
    parser.add_argument("--ct-repeats", type=int, default=3, help="runs per tool on (c)")
    parser.add_argument("--skip-ct", action="store_true", help="no corpus (c)")
    parser.add_argument("--deid-on-ct", action="store_true", help="run deid on (c) too")
    parser.add_argument("--phases", action="store_true", help="CPU per phase on the last corpus")
    parser.add_argument("--profile", action="store_true", help="cProfile radflow on (a)")
    parser.add_argument("--show-leaks", action="store_true", help="list leaks on stderr")
    args = parser.parse_args(argv)
    # pydicom warns about the odd values in its own test files; the tables go to stdout.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="radflow-deid-bench-"))
    try:
        corpora = [corpus_pydicom(work)]
        notes = []
        if not args.skip_synth:
            synth, seconds = corpus_synth(work, args.size, args.slices)
            corpora.append(synth)
            notes.append(f"Corpus (b) generated once in {seconds:.1f} s (not timed below).")
        if not args.skip_ct:
            ct, seconds = corpus_ct(work, args.size, args.ct_slices)
            corpora.append(ct)
            notes.append(f"Corpus (c) generated once in {seconds:.1f} s (not timed below).")
        results: dict[str, list[Measurement]] = {}
        repeats = {"a": args.repeats, "b": args.synth_repeats, "c": args.ct_repeats}
        for corpus in corpora:
            with_deid = corpus.key != "c" or args.deid_on_ct
            results[corpus.key] = measure(
                corpus, repeats[corpus.key], work, args.show_leaks, with_deid
            )
        for key, split in _DEID_SPLIT.items():
            total = sum(split.values())
            part = ", ".join(f"{k} {v / total:.0%}" for k, v in split.items())
            notes.append(f"deid on ({key}), share of its time inside its calls: {part}.")

        versions = (
            f"Python {sys.version.split()[0]}, pydicom {pydicom.__version__}, "
            f"os.cpu_count() = {os.cpu_count()}, {dt.date.today():%Y-%m-%d}"
        )
        notes.append(f"radflow code measured: {code_state()}.")
        notes.append(
            f"Load average (1 min) from other users: {load_before:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end."
        )
        print(f"Setup: {versions}.\n")
        for corpus in corpora:
            print(speed_table(corpus, results[corpus.key]) + "\n")
        print(leak_table(corpora, results) + "\n")
        print(failure_lines(corpora, results) + "\n")
        print(goals(corpora, results) + "\n")
        notes.append(f"Whole benchmark: {time.perf_counter() - started:.0f} s.")
        print("\n".join(f"- {note}" for note in notes))
        if args.phases:
            print("\n" + phase_split(corpora[-1], work))
        if args.profile:
            print("\n```text\n" + profile_deid(corpora[0], 15) + "```")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
