"""De-identify each study; store the delivery's labels under pseudonyms."""

from __future__ import annotations

from pathlib import Path

from radflow.keys import keyed_hash
from radflow.stages import anonymize as anonymize_stage
from radflow.stages.labels import store_labels
from tasks.runtime import lake, settings, task
from tasks.stage_task import LakeAddress, stage_task

anonymize = stage_task(anonymize_stage)


def _labels_key(labels_path: str) -> str:
    # The file's text, keyed: the key sees a changed file, and holds no original UID.
    return "labels/" + keyed_hash(
        settings().pseudonym_secret(), Path(labels_path).read_text(encoding="utf-8")
    )


@task(
    cache_policy=LakeAddress(
        name="labels",
        address=_labels_key,
        holds=lambda stored: len(lake().labelled_studies()) >= stored,
    ),
    task_run_name="labels",
    tags=["stage:anonymize"],
)
def record_labels(labels_path: str) -> int:
    """Labels keyed by original StudyInstanceUID, stored under the studies' pseudonyms.

    The task takes the file's path, not its text: the text holds original UIDs."""
    return store_labels(
        lake(), Path(labels_path).read_text(encoding="utf-8"), settings().pseudonym_secret()
    )
