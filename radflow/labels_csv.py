"""The labels CSV of `radflow ingest SOURCE --labels CSV`: each study's training label.

Header `study_uid,label` (case and spaces aside; ',', ';' or tab between columns; a UTF-8
byte-order mark is ignored); one row per study, by its original StudyInstanceUID; the label
0 or 1. The whole file is checked before anything is stored, so a mistake on line 900 leaves
no half-labelled lake. Messages name lines and columns, never UIDs (PHI).

Choices: "1.0" and "0.0" are accepted (pandas writes a label column holding a blank as
floats), a word ("malignant", "yes") is not: it could mean either class. A study listed twice
with the same label is kept once (concatenated exports repeat rows); with two labels it is an
error naming both lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from radflow.csv_table import is_uid, read_table
from radflow.errors import RadflowError

WHAT = "labels CSV"
HEADER = ("study_uid", "label")
_BINARY = re.compile(r"^([01])(\.0*)?$")


class LabelsCsvError(RadflowError):
    """The labels CSV cannot be used as it is; nothing of it was stored."""


@dataclass(frozen=True)
class StudyLabel:
    study_uid: str  # the original StudyInstanceUID (PHI)
    label: int


def parse_labels_csv(text: str) -> list[StudyLabel]:
    """Every study's label, in the file's order, each study once; LabelsCsvError naming the
    first wrong line otherwise."""
    table = read_table(text, WHAT, [HEADER], LabelsCsvError)
    labels: dict[str, StudyLabel] = {}
    first_line: dict[str, int] = {}
    for row in table.rows:
        study_uid, value = row.cells
        if not is_uid(study_uid):
            raise LabelsCsvError(
                f"{WHAT} line {row.line}: study_uid is not a DICOM UID",
                hint="give the study's StudyInstanceUID (digits and dots, at most 64)",
            )
        label = _label(value, row.line)
        seen = labels.get(study_uid)
        if seen is not None and seen.label != label:
            raise LabelsCsvError(
                f"{WHAT} line {row.line}: the study of line {first_line[study_uid]} again,"
                " with the other label",
                hint="one label per study",
            )
        if seen is None:
            labels[study_uid] = StudyLabel(study_uid, label)
            first_line[study_uid] = row.line
    if not labels:
        raise LabelsCsvError(f"{WHAT}: no rows under the header", hint="one row per study")
    return list(labels.values())


def read_labels_csv(path: Path) -> list[StudyLabel]:
    """`parse_labels_csv` of a file, with one clear error for a missing or non-text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise LabelsCsvError("no labels file at the given path") from None
    except UnicodeDecodeError:
        raise LabelsCsvError(
            f"{WHAT} is not UTF-8 text", hint="save it as CSV (UTF-8) from the spreadsheet"
        ) from None
    return parse_labels_csv(text)


def _label(value: str, line: int) -> int:
    found = _BINARY.match(value)
    if found is None:
        what = "is empty" if not value else "is not 0 or 1"
        raise LabelsCsvError(
            f"{WHAT} line {line}: the label {what}",
            hint="label each study 1 (positive) or 0 (negative); leave unknown studies out",
        )
    return int(found.group(1))
