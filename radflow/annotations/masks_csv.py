"""The masks CSV of `radflow ingest SOURCE --masks CSV`: which annotation file is whose.

Header `study_uid,path` or `study_uid,path,label` (read as `radflow.csv_table` reads a
spreadsheet's CSV: any case, ',', ';' or tab, a byte-order mark ignored); one row per study;
`path` relative to the CSV's folder or absolute; `label` optionally names the segment that is
the ROI. Every
mistake is reported with its line number, before any work starts. Messages carry no UIDs
and no paths (folder names of raw deliveries often hold patient names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from radflow.annotations.kinds import annotation_kind
from radflow.csv_table import is_uid, read_table
from radflow.errors import RadflowError

HEADER = ("study_uid", "path")
OPTIONAL = ("label",)


class MasksCsvError(RadflowError):
    """The masks CSV is malformed or names a file that cannot be used."""


@dataclass(frozen=True)
class MaskEntry:
    study_uid: str
    path: Path
    label: str | None = None


def read_masks_csv(path: Path) -> list[MaskEntry]:
    """The CSV's rows, checked: a header, a DICOM UID and an existing annotation per row,
    each study once."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MasksCsvError("no masks CSV at the given path") from None
    except UnicodeDecodeError:
        raise MasksCsvError(
            "masks CSV is not UTF-8 text", hint="save it as plain CSV (UTF-8)"
        ) from None
    table = read_table(text, "masks CSV", [HEADER, HEADER + OPTIONAL], MasksCsvError)
    entries: list[MaskEntry] = []
    first_line: dict[str, int] = {}
    for row in table.rows:
        entry = _entry(row.cells, row.line, len(table.header), path.parent)
        if entry.study_uid in first_line:
            raise MasksCsvError(
                f"masks CSV line {row.line}: the study of line {first_line[entry.study_uid]} again",
                hint="one row per study; put several segments in one SEG or label map",
            )
        first_line[entry.study_uid] = row.line
        entries.append(entry)
    return entries


def _entry(cells: tuple[str, ...], number: int, columns: int, folder: Path) -> MaskEntry:
    study_uid, file = cells[0], cells[1]
    if not is_uid(study_uid):
        raise MasksCsvError(
            f"masks CSV line {number}: study_uid is not a DICOM UID",
            hint="give the study's StudyInstanceUID (digits and dots)",
        )
    if not file:
        raise MasksCsvError(f"masks CSV line {number}: path is empty")
    mask = Path(file) if Path(file).is_absolute() else folder / file
    if not mask.is_file():
        raise MasksCsvError(
            f"masks CSV line {number}: the mask file does not exist",
            hint="paths are relative to the CSV's folder",
        )
    kind = annotation_kind(mask)
    if kind is None:
        raise MasksCsvError(
            f"masks CSV line {number}: the file is not a SEG, RTSTRUCT or label map",
            hint="label maps are NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr)",
        )
    label = cells[2] if columns == 3 and cells[2] else None
    if label is not None and kind == "labelmap":
        label = _labelmap_value(label, number)
    elif label is not None:
        # The label is applied by keeping only its voxels in the stored label map; a SEG or
        # RTSTRUCT is kept whole, as the standard object it is.
        raise MasksCsvError(
            f"masks CSV line {number}: a label is given for a SEG or RTSTRUCT",
            hint="the label column is a label map's value; a SEG's or RTSTRUCT's segment is"
            " chosen by RADFLOW_PREPROCESS__ROI_SEGMENT__LABEL or __NUMBER",
        )
    return MaskEntry(study_uid=study_uid, path=mask, label=label)


def _labelmap_value(label: str, number: int) -> str:
    """A label map's label is a voxel value: "2" or "label 2" (as segments are named)."""
    value = label.removeprefix("label").strip()
    if not value.isdigit() or int(value) == 0:
        raise MasksCsvError(
            f"masks CSV line {number}: a label map's label must be a positive whole number",
            hint="give the voxel value of the region, e.g. 1",
        )
    return str(int(value))
