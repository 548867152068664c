from __future__ import annotations

from radflow.stages.catalog import study_features, update_catalog
from tasks._common import lake, task


@task(task_run_name="catalog", tags=["stage:catalog"])
def catalog(feature_keys: list[str]) -> int:
    """Not cached: it must always point studies at this run's rows, and it writes only changes."""
    return update_catalog(lake(), feature_keys)


@task(task_run_name="features-of", tags=["stage:catalog"])
def features_of(study_id: str) -> str:
    return study_features(lake(), study_id)
