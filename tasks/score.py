"""Score each study with the champion model."""

from __future__ import annotations

from radflow.results import record_scored
from radflow.stages import score as score_stage
from tasks.runtime import lake, task
from tasks.stage_task import stage_task


@task(task_run_name="champion", tags=["stage:score"])
def current_champion() -> str:
    """The registry's champion; fails with "no champion model" when there is none yet."""
    return lake().champion()


# A study prepared with other settings than the model's is quarantined, not scored.
score = stage_task(score_stage)


@task(task_run_name="record-results", tags=["stage:score"])
def record_results(delivery: str, scores: list[str | None]) -> int:
    """Not cached: each study's pointer to its latest score, of this delivery (what `radflow
    results` lists and `radflow report` finds); a pointer that would not change is not
    rewritten."""
    return record_scored(lake(), delivery, scores)
