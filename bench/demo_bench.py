"""The demo, cold and warm, and each stage's time per study, without Prefect.

Usage: python bench/demo_bench.py [--studies 40] [--stage-studies 10] [--size 64x64x48]

Cold/warm: `radflow demo` processes on one fresh workdir (cold, then warm twice: Cached), and
a bare Prefect flow with one cached task, warm, in the same run (the floor of a warm run).
Stages: the core stage functions called directly on one synthetic delivery, so the numbers
are the work itself, not orchestration. Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_runs(studies: int) -> tuple[float, float, float]:
    """Cold, then warm twice (best of the two), and a bare Prefect flow with one cached task,
    warm: the floor of a warm run (bench/realistic_bench.py's, a new process each time)."""
    from realistic_bench import bare_prefect_flow

    with tempfile.TemporaryDirectory(prefix="radflow-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
        env["PYTHONPATH"] = str(ROOT)
        cmd = [
            sys.executable,
            "-m",
            "radflow.cli",
            "demo",
            "--workdir",
            tmp,
            "--studies",
            str(studies),
        ]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        (Path(tmp) / "bare").mkdir()
        _, bare_warm = bare_prefect_flow(Path(tmp) / "bare")
        return times[0], min(times[1:]), bare_warm


def stage_times(studies: int, size: str) -> dict[str, float]:
    from radflow.cli import DEMO_ROI_SOURCES
    from radflow.config import load_settings
    from radflow.demo import ensure_secret
    from radflow.imaging.pipelines import preprocessing
    from radflow.lake import Lake
    from radflow.stages.anonymize import anonymize_study
    from radflow.stages.candidates import fit_cnn_candidate, fit_feature_candidates
    from radflow.stages.dataset import build_dataset
    from radflow.stages.features import extract_features
    from radflow.stages.fetch import fetch_delivery
    from radflow.stages.labels import store_labels
    from radflow.stages.preprocess import build_volume
    from radflow.stages.registry import promote_if_better, register_model
    from radflow.stages.report import write_model_report, write_study_report
    from radflow.stages.score import score_study
    from radflow.store import LocalStore
    from radflow.synth import SynthSpec, synthesize

    rows, cols, slices = (int(n) for n in size.split("x"))
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="radflow-stages-") as tmp_name:
        tmp = Path(tmp_name)
        ensure_secret(tmp / "secret.key")
        # The demo's ROI sources (its studies' lesions are found by the rule when no annotation
        # or model gives one), as `radflow demo` sets them.
        os.environ.setdefault("RADFLOW_PREPROCESS__ROI_SOURCES", DEMO_ROI_SOURCES)
        settings = load_settings(secret_file=tmp / "secret.key", cache_dir=tmp / "cache")
        secret = settings.pseudonym_secret()
        config = settings.deid_config()
        spec = SynthSpec(studies=studies, rows=rows, columns=cols, slices=slices)

        def timed(name: str, fn, *args):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            out = fn(*args)
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
            return out

        timed("synthesize", synthesize, tmp / "inbox", tmp / "labels.csv", spec)
        source, lake = LocalStore(tmp / "inbox"), Lake(LocalStore(tmp / "lake"))
        refs = timed("fetch", fetch_delivery, source, "", settings.cache_dir).studies
        store_labels(lake, (tmp / "labels.csv").read_text(), secret)
        deids = [
            timed("anonymize", anonymize_study, lake, settings.cache_dir, r, config, tmp / "reid")
            for r in refs
        ]
        vols = [
            timed("register+preprocess", build_volume, lake, d, settings.preprocess) for d in deids
        ]
        feats = [
            timed("features", extract_features, lake, v, d, settings.features)
            for d, v in zip(deids, vols, strict=True)
        ]
        data = build_dataset(
            lake, feats, preprocessing(settings.preprocess), settings.features.model_dump()
        )
        fitted = [
            timed("train: feature models", fit_feature_candidates, lake, data, settings.train),
            timed("train: CNN", fit_cnn_candidate, lake, data, settings.train),
        ]
        model = timed("train: register", register_model, lake, data, fitted, settings.train)
        decision = promote_if_better(lake, model, settings.train)
        timed("model report", write_model_report, lake, model, decision)
        scores = [timed("score", score_study, lake, f, model) for f in feats]
        for s in scores:
            timed("study report", write_study_report, lake, s)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--stage-studies", type=int, default=10)
    parser.add_argument("--size", default="64x64x48")
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()

    if not args.skip_demo:
        cold, warm, bare = demo_runs(args.studies)
        print(f"\n### radflow demo, {args.studies} studies (new processes, one fresh workdir)\n")
        print("| run | seconds | warm / cold | / bare flow |\n| --- | ---: | ---: | ---: |")
        print(f"| cold | {cold:.1f} | | |")
        print(f"| warm (Cached, best of 2) | {warm:.1f} | {warm / cold:.1%} | {warm / bare:.2f} |")
        print(f"| bare Prefect flow, one cached task, warm | {bare:.1f} | | |")

    n = args.stage_studies
    times = stage_times(n, args.size)
    print(f"\n### Stage times, {n} studies of {args.size} (core functions, no Prefect)\n")
    print("| stage | total s | per study s |\n| --- | ---: | ---: |")
    for name, t in times.items():
        per = "" if name in ("train", "model report") else f"{t / n:.3f}"
        print(f"| {name} | {t:.2f} | {per} |")


if __name__ == "__main__":
    main()
