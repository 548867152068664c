"""A delivery of several realistic studies: `radflow ingest` working on one study at a time in
each stage (`RADFLOW_STUDIES_PER_STAGE=1`, the default) against every study at once (its
value = the number of studies: what Prefect's thread runner did before), in one run.

Usage: python bench/stage_turns_bench.py [--studies 6] [--rounds 2] [--workdir DIR]

The studies are realistic_bench's (two 512 x 512 x 300 CT series each, the rule's ROI).
Each round runs both settings, alternating which goes first, each on a new lake with the
same Prefect home (made by a first, untimed ingest); the table gives the best and the
median wall time and the flow process's largest resident set (psutil, every 0.2 s).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realistic_bench import SLICES, generate, radflow_env, run_cli

from radflow.demo import ensure_secret  # realistic_bench put the repository on the path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temp folder)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="radflow-turns-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_secret(workdir / "secret.key")
    inbox = workdir / "inbox"
    if not inbox.exists():
        generate(inbox, args.studies, 7, (512, 512, SLICES))
    n = args.studies
    home = radflow_env(workdir, "home")["PREFECT_HOME"]
    run_cli(["ingest", str(inbox)], radflow_env(workdir, "home"), workdir, n)  # the home

    settings = [1, n]
    seconds: dict[int, list[float]] = {s: [] for s in settings}
    peak_mb: dict[int, list[float]] = {s: [] for s in settings}
    for k in range(args.rounds):
        for s in settings if k % 2 == 0 else settings[::-1]:
            name = f"lake-{s}-{k}"
            env = radflow_env(workdir, name) | {
                "PREFECT_HOME": home,
                "RADFLOW_STUDIES_PER_STAGE": str(s),
            }
            took, peaks = run_cli(["ingest", str(inbox)], env, workdir, n)
            flow = max(rss for kind, rss in peaks if kind.startswith("flow process"))
            seconds[s].append(took)
            peak_mb[s].append(flow / 2**20)
            print(f"round {k}, {s} at a time: {took:.1f} s, {flow / 2**20:.0f} MB", flush=True)
            shutil.rmtree(workdir / name, ignore_errors=True)

    print(f"\n{n} studies of 2 x 512x512x{SLICES}, {args.rounds} rounds\n")
    print("| studies per stage | best s | median s | peak resident MB (flow process) |")
    print("| ---: | ---: | ---: | ---: |")
    for s in settings:
        print(
            f"| {s} | {min(seconds[s]):.1f} | {statistics.median(seconds[s]):.1f} |"
            f" {max(peak_mb[s]):.0f} |"
        )
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
