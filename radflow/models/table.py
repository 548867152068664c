"""A training dataset as models see it: feature names, labels, patients and the split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from radflow.errors import RadflowError
from radflow.lake.records import Dataset, DatasetRow
from radflow.models.splits import Split, three_way_split

if TYPE_CHECKING:
    from radflow.config import TrainSettings


@dataclass(frozen=True)
class Table:
    """A dataset's rows as a model sees them: feature names, labels, patients, the split."""

    rows: list[DatasetRow]
    names: list[str]
    y: NDArray[np.int_]
    patients: list[str]
    split: Split


def training_table(dataset: Dataset, settings: TrainSettings) -> Table:
    """The split is by patient and seeded: every stage that asks gets the same one."""
    rows = dataset.rows
    if not rows:
        raise RadflowError("no labelled studies to train on", hint="ingest with --labels CSV")
    y = np.array([r.label for r in rows])
    patients = [r.patient_id for r in rows]
    try:
        split = three_way_split(
            patients, list(y), settings.test_fraction, settings.validation_fraction, settings.seed
        )
    except ValueError as err:
        raise RadflowError(
            f"cannot split {len(rows)} labelled studies by patient: {err}",
            hint="label more studies of each class",
        ) from None
    return Table(rows, sorted(rows[0].features), y, patients, split)
