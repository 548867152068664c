from __future__ import annotations

from radflow.stages.features import extract_features, features_address
from tasks._common import cache_key, lake, quarantine_on_error, run_name, settings, task


def _features_key(deid: str | None, volume: str | None) -> str:
    return features_address(str(volume), settings().features)


@task(
    cache_key_fn=cache_key("features", _features_key),
    task_run_name=run_name("features"),
    tags=["stage:features"],
)
def features(deid: str | None, volume: str | None) -> str | None:
    if deid is None or volume is None:
        return None
    return quarantine_on_error(
        "features", volume, lambda: extract_features(lake(), deid, volume, settings().features)
    )
