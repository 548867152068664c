"""Many studies dropped into the inbox at once, through the production path: the polling
watcher, one `radflow.study.arrived` event per delivery (some announced twice, as a second
watcher or a retry would), the `score-study` deployment on the warm worker of a running stack.
Shared by the load test (tests/stack/test_orchestration.py) and bench/load_bench.py."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radflow.arrival import PollingWatcher
from radflow.store import LocalStore
from radflow.synth import SynthSpec, synthesize


@dataclass(frozen=True)
class LoadResult:
    studies: int
    deliveries: int
    seconds: float  # from the last delivery dropped to the last report written
    reports: int  # report folders written for these studies
    scored_studies: int  # distinct studies among the new scores
    most_scores_per_study: int
    runs: dict[str, int]  # score-study runs by final state
    pending: int  # arrivals still waiting for their run to finish
    worker_peak_rss_mib: float

    @property
    def studies_per_hour(self) -> float:
        return 3600 * self.studies / self.seconds


def _peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM for process {pid}")


def drop_and_score(
    api_url: str,
    store: LocalStore,
    work: Path,
    warm_worker_pid: int,
    deliveries: int,
    per_delivery: int,
    size: tuple[int, int, int] = (24, 24, 8),
    duplicates: int = 3,
    retry_after: float = 60,
    timeout: float = 1800,
) -> LoadResult:
    """Synthesize `deliveries` x `per_delivery` studies of `size` (rows, columns, slices),
    move them into a fresh inbox under `work` at once, and wait for every report."""
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from radflow.lake import Lake, PendingArrival
    from tasks.arrival import announce, announce_arrival, announce_overdue

    lake = Lake(store)

    staging, inbox_root = work / "staging", work / "inbox"
    inbox_root.mkdir(parents=True)
    rows, columns, slices = size
    for n in range(deliveries):
        spec = SynthSpec(per_delivery, rows, columns, slices, seed=1000 + n)
        synthesize(staging / f"delivery-{n:03d}", work / f"truth-{n:03d}.csv", spec)
    reported = {p.parent for p in store.root.glob("reports/*/*/study.html")}
    scored = {o.key for o in store.list("scores/")}
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        before = {r.id for r in client.read_flow_runs(limit=200)}
        for folder in sorted(staging.iterdir()):  # "at once": each folder appears whole
            folder.rename(inbox_root / folder.name)
        dropped, dropped_at = time.perf_counter(), time.time()
        inbox = LocalStore(inbox_root)
        watcher = PollingWatcher(inbox, "", lake, stable_age=2)
        EventsWorker.drain_all()  # one left by an earlier test may still point elsewhere
        arrivals: list[str] = []
        while len(arrivals) < deliveries and time.perf_counter() - dropped < timeout:
            for arrival in watcher.poll():
                pending = PendingArrival(
                    source=inbox.url, prefix="", depth=1, arrival=arrival.arrival_id
                )
                announce_arrival(lake, pending)
                if len(arrivals) < duplicates:  # a second watcher, a retry
                    announce(pending)
                watcher.done(arrival)
                arrivals.append(arrival.arrival_id)
            time.sleep(0.5)
        EventsWorker.drain_all()
        runs: list[Any] = []
        waiting = arrivals
        while time.perf_counter() - dropped < timeout:
            # What the watcher does for an event whose run never came (retry_after 600 s).
            announce_overdue(lake, retry_after)
            runs = [
                r
                for r in client.read_flow_runs(limit=200)
                if r.id not in before and r.name.startswith("score-")
            ]
            records = [r for a in arrivals if (r := lake.pending(a)) is not None]
            waiting = [r.arrival for r in records]
            given_up = all(r.announcements >= 3 for r in records)
            if given_up and all(r.state and r.state.is_final() for r in runs):
                break  # nothing in flight, and nothing will be announced again
            time.sleep(1)
        ended = max(r.end_time for r in runs if r.end_time).timestamp()
    new = {p.parent for p in store.root.glob("reports/*/*/study.html")} - reported
    seconds = ended - dropped_at
    # One score per study and one report per score (its address is the score's): a study
    # scored twice would show as two scores with its pseudonym.
    studies = Counter(
        lake.score(o.key).study_id for o in store.list("scores/") if o.key not in scored
    )
    shutil.rmtree(staging, ignore_errors=True)
    return LoadResult(
        studies=deliveries * per_delivery,
        deliveries=deliveries,
        seconds=seconds,
        reports=len(new),
        scored_studies=len(studies),
        most_scores_per_study=max(studies.values(), default=0),
        runs=dict(Counter(r.state.name for r in runs if r.state)),
        pending=len(waiting),
        worker_peak_rss_mib=_peak_rss_mib(warm_worker_pid),
    )
