from __future__ import annotations

from radflow.stages.fetch import delivery_fingerprint, fetch_delivery
from radflow.stages.quarantine import record
from radflow.store import open_store
from tasks._common import announce_quarantine, cache_key, lake, run_name, settings, task


def _fetch_key(source: str, prefix: str = "") -> str:
    s = settings()
    return delivery_fingerprint(
        open_store(source, s.s3_options()), prefix, s.cache_dir, s.max_series_voxels
    )


@task(
    cache_key_fn=cache_key("fetch", _fetch_key),
    task_run_name=run_name("fetch"),
    tags=["stage:fetch"],
)
def fetch(source: str, prefix: str = "") -> list[str]:
    """Study references of a delivery; unreadable files are quarantined."""
    s = settings()
    result = fetch_delivery(
        open_store(source, s.s3_options()), prefix, s.cache_dir, s.max_series_voxels
    )
    for rec in result.quarantined:
        announce_quarantine(record(lake(), rec), rec.stage, rec.reason)
    return result.studies
