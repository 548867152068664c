"""A worker that keeps Python warm: it runs each flow run of its work queue inside its own,
long-lived process instead of starting a new one.

Scoring on arrival is latency-bound, and a process worker spends about 10 s of it on a fresh
interpreter, Prefect's engine and the scientific stack before the flow's first line (measured
in bench/RESULTS.md). This worker imports the flows once, at start, and then only polls.

It is a Prefect process worker in every other respect (it heartbeats, claims runs with
Prefect's own Pending proposal, shows in the UI under its pool), so a plain `prefect worker
start --pool cpu --work-queue arrival` can stand in for it, slower, with the same results.
The price of running in-process: a run cannot be killed from the UI once it has started (it
finishes on its own; scoring runs take seconds), and a crash of the process takes the runs
it holds with it (Prefect then shows them Crashed, and a re-run is idempotent).

Usage: python -m flows.runtime.warm_worker --pool cpu --queue arrival [--limit 2]
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import os
import socket
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
from prefect.exceptions import InfrastructureNotAvailable
from prefect.flow_engine import run_flow
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessWorker,
    ProcessWorkerResult,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.flows import Flow

ROOT = Path(__file__).resolve().parents[2]  # the checkout
# The flows of radflow's deployments, imported when the worker starts (that is the warm part).
PRELOAD = ("flows.arrival", "flows.score", "flows.ingest")


@cache
def flow_at(entrypoint: str) -> Flow[..., Any]:
    """`flows/arrival.py:score_arrival` (a deployment's entrypoint) -> the flow object of the
    already imported module `flows.arrival`, so every run shares one import."""
    path, _, name = entrypoint.removeprefix("./").partition(":")  # relative to the checkout
    module = Path(path).with_suffix("").as_posix().replace("/", ".")
    found: Flow[..., Any] = getattr(importlib.import_module(module), name)
    return found


def _execute(flow: Flow[..., Any], flow_run: FlowRun) -> bool:
    """Run one flow run to its final state; True when it completed."""
    state = run_flow(flow, flow_run=flow_run, return_type="state")
    return bool(state.is_completed())  # type: ignore[union-attr]


class WarmWorker(ProcessWorker):
    """A process worker whose runs execute in its own process."""

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        flow = flow_at(await self._deployment_entrypoint(flow_run))
        if task_status is not None:
            task_status.started(os.getpid())
        # A fresh context: nothing of the worker's own Prefect context leaks into the run.
        call = partial(contextvars.Context().run, _execute, flow, flow_run)
        await anyio.to_thread.run_sync(call, abandon_on_cancel=False)
        # The run's own final state (Completed or Failed) is already recorded; 0 tells the
        # worker the infrastructure itself did not crash.
        return ProcessWorkerResult(status_code=0, identifier=f"{socket.gethostname()}:warm")

    async def _deployment_entrypoint(self, flow_run: FlowRun) -> str:
        if flow_run.deployment_id is None:
            raise ValueError("the warm worker runs deployments' flow runs only")
        deployment = await self.client.read_deployment(flow_run.deployment_id)
        if not deployment.entrypoint:
            raise ValueError(f"deployment {deployment.name} has no entrypoint")
        return deployment.entrypoint

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: ProcessJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        raise InfrastructureNotAvailable(
            "the run executes inside the warm worker's process and finishes on its own"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--queue", action="append", required=True, dest="queues")
    parser.add_argument("--limit", type=int, default=2, help="flow runs at once")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    os.chdir(ROOT)
    for module in PRELOAD:
        importlib.import_module(module)
    worker = WarmWorker(
        work_pool_name=args.pool,
        work_queues=args.queues,
        limit=args.limit,
        name=args.name or f"warm-{socket.gethostname()}-{os.getpid()}",
    )
    anyio.run(worker.start)


if __name__ == "__main__":
    main()
