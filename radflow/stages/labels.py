"""Labels: a CSV of original StudyInstanceUID,label -> `labels/<study_id>.json`, by pseudonym.

The file holds original UIDs (PHI): it is read on the worker, and only pseudonyms reach the
lake. It is checked whole first (`radflow.labels_csv`): a bad file stores nothing."""

from __future__ import annotations

from radflow.dicom.deid import study_pseudonym
from radflow.labels_csv import parse_labels_csv
from radflow.lake import Lake

NAME = "labels"


def store_labels(lake: Lake, labels_csv: str, secret: bytes) -> int:
    """How many studies' labels were stored."""
    labels = parse_labels_csv(labels_csv)
    for entry in labels:
        lake.put_label(study_pseudonym(secret, entry.study_uid), entry.label)
    return len(labels)
