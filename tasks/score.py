from __future__ import annotations

from radflow.keys import address
from radflow.stages.registry import champion
from radflow.stages.score import score_study
from tasks._common import cache_key, lake, quarantine_on_error, run_name, task


@task(task_run_name="champion", tags=["stage:score"])
def current_champion() -> str:
    """The registry's champion; fails with "no champion model" when there is none yet."""
    return champion(lake())


def _score_key(features: str | None, model: str) -> str:
    return address("scores", [str(features), model])


@task(
    cache_key_fn=cache_key("scores", _score_key),
    task_run_name=run_name("score"),
    tags=["stage:score"],
)
def score(features: str | None, model: str) -> str | None:
    """A study prepared with other settings than the model's is quarantined, not scored."""
    if features is None:
        return None
    return quarantine_on_error("score", features, lambda: score_study(lake(), features, model))
