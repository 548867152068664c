"""Only a fit's work holds a `gpu` slot: a cached stage returns while every slot is taken.

Real Prefect runs against the session's server, with the `gpu` concurrency limit that
`radflow serve` creates (one slot here), held by another holder while the flow runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.cache_policies import INPUTS

from tasks.runtime import gpu_task, task

pytestmark = pytest.mark.flow

started_after_release: list[bool] = []
_released = threading.Event()


@gpu_task("work-on-gpu")
def work(x: int) -> int:
    started_after_release.append(_released.is_set())
    return x * 2


@task(cache_policy=INPUTS, persist_result=True, task_run_name="stage-on-gpu")
def stage(x: int) -> int:
    return work(x)


@flow(name="gpu-slot")
def one_stage(x: int) -> int:
    return stage(x)


@pytest.fixture
def gpu_limit(prefect_server: None) -> Iterator[None]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
    try:
        yield
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag("gpu")


def _hold_the_gpu(release: threading.Event) -> threading.Thread:
    """Take the only `gpu` slot until `release` (or a minute) passes; returns once it is held."""
    from prefect.concurrency.sync import concurrency

    held = threading.Event()

    def hold() -> None:
        with concurrency("tag:gpu", occupy=1):
            held.set()
            release.wait(60)
            _released.set()  # the slot frees as this block ends

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(60), "could not take the gpu slot"
    return holder


def _run(x: int) -> int:
    """`one_stage(x)` on a thread, failing rather than hanging if it never gets a slot."""
    out: list[int] = []
    runner = threading.Thread(target=lambda: out.append(one_stage(x)), daemon=True)
    runner.start()
    runner.join(120)
    assert out, "the flow waited over 2 minutes (for a gpu slot?)"
    return out[0]


def test_a_cached_stage_takes_no_gpu_slot_and_its_work_waits_for_one(gpu_limit: None) -> None:
    assert _run(21) == 42  # the slot is free: the work runs and the stage is cached
    assert started_after_release == [False]

    release = threading.Event()
    _released.clear()
    holder = _hold_the_gpu(release)
    assert _run(21) == 42  # cached: returns while the slot is held
    assert not _released.is_set()
    assert started_after_release == [False]  # the work did not run again
    release.set()
    holder.join(60)

    release = threading.Event()
    _released.clear()
    holder = _hold_the_gpu(release)
    threading.Timer(1.0, release.set).start()
    assert _run(5) == 10  # new input: the work waited for the slot
    assert started_after_release == [False, True]
    holder.join(60)
