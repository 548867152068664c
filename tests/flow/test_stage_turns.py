"""A flow process works on one study at a time in each stage, and the studies still move
through the stages side by side (`radflow.stage_slots`, taken by `tasks.stage_task`).

Real Prefect runs of tasks that `stage_task` makes from two stand-in stages, mapped over
three studies on Prefect's thread runner, as the ingest flow maps its stages.
"""

from __future__ import annotations

import threading
import time
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect import flow

from tasks.stage_task import stage_task

pytestmark = pytest.mark.flow

WORK_S = 0.6
_log: list[tuple[str, str, float, float]] = []
_log_lock = threading.Lock()


def _stand_in(name: str) -> Any:
    def run(lake: Any, settings: Any, key: str) -> str:
        start = time.monotonic()
        time.sleep(WORK_S)
        with _log_lock:
            _log.append((name, key, start, time.monotonic()))
        return f"{name}/{key}"

    return SimpleNamespace(NAME=name, address=lambda settings, key: f"{name}/{key}", run=run)


first = stage_task(_stand_in("first-stand-in"))
second = stage_task(_stand_in("second-stand-in"))


@flow(name="stage-turns")
def two_stages(keys: list[str]) -> list[str | None]:
    done = second.map(first.map(keys))
    return [f.result() for f in done]


def _runs(stage: str) -> list[tuple[float, float]]:
    return sorted((start, end) for name, _, start, end in _log if name == stage)


def _overlap(spans: list[tuple[float, float]]) -> bool:
    return any(later[0] < earlier[1] for earlier, later in pairwise(spans))


@pytest.fixture
def studies(prefect_server: None, pipeline_env: Path) -> list[str]:
    _log.clear()
    return [f"study-{i}" for i in range(3)]


def test_one_study_at_a_time_per_stage_and_the_stages_overlap(studies: list[str]) -> None:
    assert two_stages(studies) == [f"second-stand-in/first-stand-in/{k}" for k in studies]
    firsts, seconds = _runs("first-stand-in"), _runs("second-stand-in")
    assert len(firsts) == len(seconds) == 3
    assert not _overlap(firsts) and not _overlap(seconds)
    # The first study's second stage ran while a later study was in the first stage.
    assert seconds[0][0] < firsts[-1][1]


def test_studies_per_stage_lets_that_many_in_at_once(
    studies: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import runtime

    monkeypatch.setenv("RADFLOW_STUDIES_PER_STAGE", "3")
    runtime.settings.cache_clear()
    two_stages(studies)
    firsts = _runs("first-stand-in")
    assert len(firsts) == 3
    assert max(start for start, _ in firsts) < min(end for _, end in firsts)
