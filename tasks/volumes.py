from __future__ import annotations

from radflow.stages.volumes import build_volume, volume_address
from tasks._common import cache_key, lake, quarantine_on_error, run_name, settings, task


def _volume_key(deid: str | None) -> str:
    return volume_address(str(deid), settings().preprocess)


@task(
    cache_key_fn=cache_key("volumes", _volume_key),
    task_run_name=run_name("preprocess"),
    tags=["stage:preprocess"],
)
def preprocess(deid: str | None) -> str | None:
    """Register the study's series and preprocess its primary; None passes quarantine on."""
    if deid is None:
        return None
    s = settings()
    return quarantine_on_error(
        "preprocess",
        deid,
        lambda: build_volume(lake(), deid, s.preprocess, s.max_series_voxels),
    )
