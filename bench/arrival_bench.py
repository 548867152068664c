"""Latency of scoring on arrival: from the last file of a delivery written to the inbox to the
last of its study reports written to the lake, through the whole production path: the polling
watcher (stable_age 2 s), a `radflow.study.arrived` event, the `score-study` deployment's
trigger on a Prefect server started by `radflow serve`'s code, a process worker, the flow.

Usage: python bench/arrival_bench.py [--studies 1 10 50] [--stable-age 2]

One delivery of N studies per measurement (the run fans the studies out), on a lake that
already has a champion. Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--stable-age", type=float, default=2.0)
    args = parser.parse_args()

    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from support.lakes import stack_env, trained_lake

    from flows.runtime import stack as runtime_stack
    from radflow.arrival import PollingWatcher
    from radflow.lake import PendingArrival
    from radflow.store import LocalStore
    from radflow.synth import SynthSpec, synthesize
    from tasks.arrival import announce_arrival

    rows = []
    with tempfile.TemporaryDirectory(prefix="radflow-arrival-") as tmp_name:
        tmp = Path(tmp_name)
        print("building a lake with a champion ...", file=sys.stderr)
        built = trained_lake(tmp)
        inbox_root = tmp / "inbox"
        inbox_root.mkdir()
        env = stack_env(built, tmp)
        print("starting the stack ...", file=sys.stderr)
        stack = runtime_stack.start(tmp / "stack", env=env)
        try:
            inbox = LocalStore(inbox_root)
            watcher = PollingWatcher(inbox, "", built.lake, stable_age=args.stable_age)
            for n, count in enumerate(args.studies):
                staging = tmp / f"staging-{n}"
                spec = SynthSpec(studies=count, rows=40, columns=40, slices=16, seed=100 + n)
                synthesize(staging, tmp / f"truth-{n}.csv", spec)
                before = set(built.root.glob("reports/*/*/study.html"))
                # Files appear one by one, as an upload would make them appear.
                for path in sorted(staging.rglob("*.dcm")):
                    target = inbox_root / f"delivery-{n}" / path.relative_to(staging)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
                last_write = time.perf_counter()
                arrivals = []
                while not arrivals:
                    time.sleep(0.25)
                    arrivals = watcher.poll()
                detected = time.perf_counter()
                announced = datetime.now(UTC)
                with temporary_settings({PREFECT_API_URL: stack.api_url}):
                    for arrival in arrivals:
                        announce_arrival(
                            built.lake,
                            PendingArrival(
                                source=inbox.url, prefix="", depth=1, arrival=arrival.arrival_id
                            ),
                        )
                        watcher.done(arrival)
                    EventsWorker.drain_all()
                while len(set(built.root.glob("reports/*/*/study.html")) - before) < count:
                    time.sleep(0.25)
                    if time.perf_counter() - last_write > 1800:
                        raise TimeoutError(f"{count} studies: no reports after 30 min")
                done = time.perf_counter()
                trigger, pickup, run = _run_phases(stack.api_url, announced)
                rows.append((count, detected - last_write, trigger, pickup, run, done - last_write))
                print(f"{count} studies: {done - last_write:.1f} s", file=sys.stderr)
        finally:
            runtime_stack.stop(tmp / "stack")

    print(f"\n### Scoring on arrival, stable_age {args.stable_age:g} s (one delivery each)\n")
    print(
        "| studies | stable, detected s | event to run created s | created to started s "
        "| run s | total s | s per study |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for count, detect, trigger, pickup, run, total in rows:
        print(
            f"| {count} | {detect:.1f} | {trigger:.1f} | {pickup:.1f} | {run:.1f} "
            f"| {total:.1f} | {total / count:.2f} |"
        )


def _run_phases(api_url: str, announced: datetime) -> tuple[float, float, float]:
    """For the newest score-study run: event -> run created (Prefect's trigger), created ->
    started (the worker's poll and the new process), started -> finished (the flow)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for _ in range(100):
            run = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)[0]
            if run.end_time is not None:
                break
            time.sleep(0.2)
    assert run.created and run.start_time and run.end_time
    return (
        (run.created - announced).total_seconds(),
        (run.start_time - run.created).total_seconds(),
        (run.end_time - run.start_time).total_seconds(),
    )


if __name__ == "__main__":
    main()
