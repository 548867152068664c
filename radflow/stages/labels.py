"""Labels: a CSV of original StudyInstanceUID,label -> `labels/<study_id>.json`, by pseudonym.

The file holds original UIDs (PHI): it is read on the worker, and only pseudonyms reach the
lake."""

from __future__ import annotations

import csv
import io

from radflow.dicom.deid import study_pseudonym
from radflow.errors import QuarantineError
from radflow.lake import Lake

NAME = "labels"


def store_labels(lake: Lake, labels_csv: str, secret: bytes) -> int:
    """How many rows were stored."""
    count = 0
    for row in csv.DictReader(io.StringIO(labels_csv)):
        if set(row) < {"study_uid", "label"}:
            raise QuarantineError("bad labels file", "columns must be study_uid,label")
        lake.put_label(study_pseudonym(secret, row["study_uid"].strip()), int(row["label"]))
        count += 1
    return count
