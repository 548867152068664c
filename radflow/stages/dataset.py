"""The training table: labelled feature rows -> `datasets/<v>/<hash>` (JSON).

Also a report of what did not join: studies without a label (kept for scoring), labels
without a study, and rows prepared with other settings (never mixed into one model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from radflow.config import Settings
from radflow.imaging.pipelines import preprocessing
from radflow.keys import address as content_address
from radflow.keys import canonical_json, digest, sha256_bytes
from radflow.lake import Lake
from radflow.lake.records import Dataset, DatasetRow

NAME = "dataset"


def expected_settings(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The preprocessing and extraction a row must have been made with to join."""
    return preprocessing(settings.preprocess), settings.features.model_dump()


def address(lake: Lake, settings: Settings, feature_keys: Sequence[str]) -> str:
    """A cache key, not the output's address (that hashes the table itself): the rows, the
    expected settings, and the labels' ETags, so a new or changed label is seen."""
    keys = sorted(feature_keys)
    return digest(
        keys, {"labels": lake.labels_version(), "expected": list(expected_settings(settings))}
    )


def run(lake: Lake, settings: Settings, feature_keys: Sequence[str]) -> str:
    return build_dataset(lake, list(feature_keys), *expected_settings(settings))


def build_dataset(
    lake: Lake,
    feature_keys: list[str],
    preprocessing: dict[str, Any],
    extraction: dict[str, Any],
) -> str:
    table = dataset_table(lake, feature_keys, preprocessing, extraction)
    out = content_address("datasets", [sha256_bytes(canonical_json(table.model_dump()))])
    if not lake.has(out):
        lake.put_dataset(out, table)
    return out


def dataset_table(
    lake: Lake,
    feature_keys: list[str],
    preprocessing: dict[str, Any],
    extraction: dict[str, Any],
) -> Dataset:
    """The training table, not written: `radflow train` checks it before any flow starts."""
    # Compared with what was read back from JSON: tuples become lists there.
    preprocessing, extraction = json.loads(json.dumps([preprocessing, extraction]))
    rows, unlabelled, stale = [], [], []
    studies = set()
    for key in sorted(set(feature_keys)):
        row = lake.feature_row(key)
        studies.add(row.study_id)
        qc = lake.qc(row.volume)
        if (qc.preprocessing, row.extraction) != (preprocessing, extraction):
            stale.append(row.study_id)
            continue
        label = lake.label(row.study_id)
        if label is None:
            unlabelled.append(row.study_id)
        else:
            rows.append(DatasetRow(**row.model_dump(), label=label, features_key=key))
    table = Dataset(
        rows=rows,
        unlabelled_studies=sorted(unlabelled),
        labels_without_study=sorted(lake.labelled_studies() - studies),
        stale_studies=sorted(stale),
        preprocessing=preprocessing,
        extraction=extraction,
    )
    return table
