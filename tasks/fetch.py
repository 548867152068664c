"""List a delivery and group its files into studies in the worker's cache."""

from __future__ import annotations

from radflow.stages.fetch import delivery_fingerprint, fetch_delivery
from radflow.store import open_store
from tasks.runtime import settings, task
from tasks.stage_task import LakeAddress, quarantine, run_name


def _fetch_key(source: str, prefix: str = "") -> str:
    # Lists the delivery: the key must see new, changed and removed files.
    s = settings()
    inbox = open_store(source, s.s3_options())
    return delivery_fingerprint(inbox, prefix, s.cache_dir, s.max_series_voxels)


@task(
    cache_policy=LakeAddress(name="fetch", address=_fetch_key),
    task_run_name=run_name("fetch"),
    tags=["stage:fetch"],
)
def fetch(source: str, prefix: str = "") -> list[str]:
    """Study references of a delivery; unreadable files are quarantined."""
    s = settings()
    inbox = open_store(source, s.s3_options())
    result = fetch_delivery(inbox, prefix, s.cache_dir, s.max_series_voxels)
    for record in result.quarantined:
        quarantine(record)
    return result.studies
