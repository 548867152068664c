from __future__ import annotations

from prefect import task

from radflow.keys import address
from radflow.stages.score import score_study
from radflow.stages.train import champion
from tasks._common import cache_key, lake, run_name


@task(task_run_name="champion")
def current_champion() -> str:
    """The registry's champion; fails with "no champion model" when there is none yet."""
    return champion(lake())


def _score_key(features: str | None, model: str) -> str:
    return address("scores", [str(features), model])


@task(cache_key_fn=cache_key("scores", _score_key), task_run_name=run_name("score"))
def score(features: str | None, model: str) -> str | None:
    return None if features is None else score_study(lake(), features, model)
