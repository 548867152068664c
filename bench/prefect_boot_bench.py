"""How long radflow's temporary Prefect server takes to answer, by the state of its home.

Usage: python bench/prefect_boot_bench.py [--repeats 3]

Each start is `flows.runtime.server.start_in_background` then `wait` (what every flow command
does) in a new process, timed from the spawn to the first healthy answer, for three homes:

- new, migrated: a new PREFECT_HOME and no template (Prefect migrates a new database);
- new, from the template: a new PREFECT_HOME seeded from it (flows/runtime/prefect_db.py);
- existing, checked: the same PREFECT_HOME again, its `current.json` removed first (the
  server runs its migrations and block-type registration, which find nothing to do);
- existing, current: the same again with that record (the server skips both).

Rounds alternate the four, so load changes hit all alike; the figure is each one's best and
median. The template lives in a temporary XDG_CACHE_HOME, never the user's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import time
from flows.runtime import server
started = time.perf_counter()
proc = server.start_in_background()
server.wait(proc)
print(time.perf_counter() - started)
server._stop(proc)
"""


def _start(home: Path, cache: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    env |= {"PREFECT_HOME": str(home), "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {
        "new, migrated": [],
        "new, from the template": [],
        "existing, checked": [],
        "existing, current": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        existing = work / "existing"
        _start(existing, work / "warmup-cache")  # makes its database (and a template, unused)
        for round_ in range(args.repeats):
            empty = work / f"empty-cache-{round_}"  # no template: Prefect migrates
            times["new, migrated"].append(_start(work / f"migrated-{round_}", empty))
            # `empty` now holds the template that start left: the next new home is seeded.
            times["new, from the template"].append(_start(work / f"seeded-{round_}", empty))
            (existing / "current.json").unlink()
            times["existing, checked"].append(_start(existing, empty))
            times["existing, current"].append(_start(existing, empty))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.repeats} rounds\n")
    print("| Prefect home | best s | median s |")
    print("| --- | ---: | ---: |")
    for name, found in times.items():
        print(f"| {name} | {min(found):.2f} | {statistics.median(found):.2f} |")


if __name__ == "__main__":
    main()
