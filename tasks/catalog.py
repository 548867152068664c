"""Point each study at its current feature row; find a study's row by its pseudonym."""

from __future__ import annotations

from radflow.stages.catalog import update_catalog
from tasks.runtime import lake, task


@task(task_run_name="catalog", tags=["stage:catalog"])
def catalog(feature_keys: list[str]) -> int:
    """Not cached: it must always point studies at this run's rows, and it writes only changes."""
    return update_catalog(lake(), feature_keys)


@task(task_run_name="features-of", tags=["stage:catalog"])
def features_of(study_id: str) -> str:
    return lake().study_features(study_id)


@task(task_run_name="current-rows", tags=["stage:catalog"])
def current_rows() -> list[str]:
    """Every study's current feature row."""
    return lake().current_features()
