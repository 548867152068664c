"""Throughput under load: studies per hour on this machine when many studies are dropped into
the inbox at once and scored on arrival (watcher, events, the warm worker of `radflow serve`'s
stack on a throwaway PostgreSQL server, or on SQLite with `--sqlite`).

Usage: python bench/load_bench.py [--run 50x10x24x24x8 ...] [--sqlite]

Each `--run` is DELIVERIESxSTUDIESxROWSxCOLUMNSxSLICES. The defaults are the issue's two
sizes: 64x64x64 and 512x512x100. Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", nargs="+", default=["10x4x64x64x64", "2x2x512x512x100"])
    parser.add_argument("--sqlite", action="store_true", help="the stack on SQLite")
    args = parser.parse_args()

    from contextlib import nullcontext

    from support.lakes import stack_env, trained_lake
    from support.load import drop_and_score
    from support.postgres import throwaway_postgres

    from flows.runtime import stack as runtime_stack

    results = []
    database = nullcontext(None) if args.sqlite else throwaway_postgres()
    with tempfile.TemporaryDirectory(prefix="radflow-load-") as tmp_name, database as url:
        tmp = Path(tmp_name)
        print("building a lake with a champion ...", file=sys.stderr)
        built = trained_lake(tmp)
        env = stack_env(built, tmp)
        stack = runtime_stack.start(tmp / "stack", database_url=url, env=env)
        try:
            for n, run in enumerate(args.run):
                deliveries, per, rows, columns, slices = (int(x) for x in run.split("x"))
                print(f"{run} ...", file=sys.stderr)
                result = drop_and_score(
                    stack.api_url,
                    built.lake.store,
                    tmp / f"load-{n}",
                    stack.pids["worker-cpu-warm"],
                    deliveries,
                    per,
                    (rows, columns, slices),
                    retry_after=600,  # the watcher's default
                )
                results.append((f"{rows}x{columns}x{slices}", result))
                print(result, file=sys.stderr)
        finally:
            runtime_stack.stop(tmp / "stack")

    print("\n### Load: studies dropped at once, scored on arrival (2 cores)\n")
    print(
        "| study size | studies | deliveries | s | studies/hour | reports | distinct studies "
        "| runs | warm worker peak RSS MiB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for size, r in results:
        print(
            f"| {size} | {r.studies} | {r.deliveries} | {r.seconds:.0f} | "
            f"{r.studies_per_hour:.0f} | {r.reports} | {r.scored_studies} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(r.runs.items()))} | "
            f"{r.worker_peak_rss_mib:.0f} |"
        )


if __name__ == "__main__":
    main()
