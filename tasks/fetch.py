"""List a delivery and group its files into studies in the worker's cache."""

from __future__ import annotations

from pathlib import Path

from radflow.annotations.masks_csv import MaskEntry, read_masks_csv
from radflow.raw_cache import has_study
from radflow.stages.fetch import delivery_fingerprint, fetch_delivery, masks_fingerprint
from radflow.store import open_store
from tasks.runtime import lake, settings, task
from tasks.stage_task import LakeAddress, quarantine, run_name


def _masks(masks: str) -> list[MaskEntry]:
    # Read here, inside the task: the CSV holds original StudyInstanceUIDs (PHI), so only
    # its path is a parameter.
    return read_masks_csv(Path(masks)) if masks else []


def _fetch_key(source: str, prefix: str = "", masks: str = "") -> str:
    # Lists the delivery: the key must see new, changed and removed files, and a changed
    # masks CSV or mask file (keyed: the CSV's rows hold original UIDs). No masks is "", not
    # None: LakeAddress gives no cache key when an input is None.
    s = settings()
    inbox = open_store(source, s.s3_options())
    key = delivery_fingerprint(inbox, prefix, s.cache_dir, s.max_series_voxels)
    if not masks:
        return key
    return f"{key}-masks-{masks_fingerprint(_masks(masks), s.pseudonym_secret())}"


@task(
    cache_policy=LakeAddress(
        name="fetch",
        address=_fetch_key,
        holds=lambda refs: all(has_study(settings().cache_dir, ref) for ref in refs),
    ),
    task_run_name=run_name("fetch"),
    tags=["stage:fetch"],
)
def fetch(source: str, prefix: str = "", masks: str = "") -> list[str]:
    """Study references of a delivery; unreadable files are quarantined. `masks`: the path
    of a masks CSV (`ingest --masks`), whose files join their studies."""
    from prefect.logging import get_run_logger

    s = settings()
    inbox = open_store(source, s.s3_options())
    result = fetch_delivery(inbox, prefix, s.cache_dir, s.max_series_voxels, _masks(masks))
    for record in result.quarantined:
        quarantine(record)
    if cleared := lake().clear_quarantine(result.accepted):
        get_run_logger().info("%d file(s) refused before are fine now: records removed", cleared)
    if result.masks_without_study:
        get_run_logger().warning(
            "masks CSV: %d row(s) name a study that is not in the delivery; not used",
            result.masks_without_study,
        )
    if result.masks_of_another_study:
        get_run_logger().warning(
            "masks CSV: %d SEG/RTSTRUCT file(s) belong to another study than their row's; not used",
            result.masks_of_another_study,
        )
    return result.studies
