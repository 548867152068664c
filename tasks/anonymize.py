from __future__ import annotations

from pathlib import Path

from radflow.keys import keyed_hash
from radflow.stages.anonymize import anonymize_study, deid_address, store_labels
from tasks._common import cache_key, lake, quarantine_on_error, run_name, settings, task


def _deid_key(ref: str) -> str:
    return deid_address(ref, settings().deid_config())


@task(
    cache_key_fn=cache_key("deid", _deid_key),
    task_run_name=run_name("anonymize"),
    tags=["stage:anonymize"],
)
def anonymize(ref: str) -> str | None:
    s = settings()
    return quarantine_on_error(
        "anonymize",
        ref,
        lambda: anonymize_study(lake(), s.cache_dir, ref, s.deid_config(), s.deid.reid_dir),
    )


def _labels_key(labels_path: str) -> str:
    return "labels/" + keyed_hash(settings().pseudonym_secret(), Path(labels_path).read_text())


@task(
    cache_key_fn=cache_key("labels", _labels_key), task_run_name="labels", tags=["stage:anonymize"]
)
def record_labels(labels_path: str) -> int:
    """Labels keyed by original StudyInstanceUID, stored under the studies' pseudonyms.

    The task takes the file's path, not its text: the text holds original UIDs."""
    return store_labels(lake(), Path(labels_path).read_text(), settings().pseudonym_secret())
