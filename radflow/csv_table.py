"""The small CSV files users write in a spreadsheet (labels, masks): read whole, as a table
with each row's line number, whatever Excel or LibreOffice saved.

The stdlib's `csv` reads the rows; what it does not do is handled here: a UTF-8 byte-order
mark (Excel's "CSV UTF-8"), the delimiter a locale's spreadsheet chose (';' where the comma
is the decimal mark, a tab from "Text (tab-delimited)"), blank lines, and a header compared
by name, case and spaces aside. Messages name lines and columns, never cell values: the
cells hold original UIDs (PHI). Column names are not PHI.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from radflow.errors import RadflowError

BOM = "\ufeff"
DELIMITERS = (",", ";", "\t")
# PS3.5 9.1's characters and length, without its "no leading zero" rule: the file must match
# the UID the scanner wrote, and some scanners write leading zeros.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_uid(value: str) -> bool:
    """Digits and dots, at most 64 characters: a DICOM UID's syntax."""
    return len(value) <= 64 and _UID.match(value) is not None


@dataclass(frozen=True)
class CsvRow:
    """A non-blank row: its cells, stripped, and the line of the file it ends on."""

    line: int
    cells: tuple[str, ...]


@dataclass(frozen=True)
class CsvTable:
    header: tuple[str, ...]  # as normalised: lower case, stripped
    rows: tuple[CsvRow, ...]
    delimiter: str


def column_name(name: str) -> str:
    return name.strip().lower()


def read_table(
    text: str,
    what: str,
    accepted: Sequence[tuple[str, ...]],
    error: type[RadflowError] = RadflowError,
) -> CsvTable:
    """`text` as a table whose header is one of `accepted` (names in lower case); every
    row has as many cells as the header. `what` names the file in messages ("labels CSV")."""
    text = text.removeprefix(BOM)
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if not first.strip():
        raise error(f"{what} line 1: no header", hint=_expected(accepted))
    delimiter = _delimiter(first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: tuple[str, ...] | None = None
    rows: list[CsvRow] = []
    try:
        for raw in reader:
            cells = tuple(cell.strip() for cell in raw)
            if not any(cells):
                continue
            if header is None:
                header = _header(cells, reader.line_num, what, accepted, error)
                continue
            if len(cells) != len(header):
                columns = f"{len(cells)} column{'s' if len(cells) != 1 else ''}"
                raise error(
                    f"{what} line {reader.line_num}: {columns} where the header has {len(header)}"
                )
            rows.append(CsvRow(reader.line_num, cells))
    except csv.Error:
        raise error(
            f"{what} line {reader.line_num}: not readable as CSV (an unclosed quote?)"
        ) from None
    assert header is not None  # `first` is a non-blank line
    return CsvTable(header, tuple(rows), delimiter)


def _delimiter(first_line: str) -> str:
    """The delimiter of the header line: whichever of ',', ';' or tab it holds most of.

    Not `csv.Sniffer`: on a two-column header it picks letters as delimiters."""
    return max(DELIMITERS, key=first_line.count)


def _header(
    cells: tuple[str, ...],
    line: int,
    what: str,
    accepted: Sequence[tuple[str, ...]],
    error: type[RadflowError],
) -> tuple[str, ...]:
    header = tuple(column_name(c) for c in cells)
    if header not in accepted:
        found = ",".join(cells)
        raise error(
            f"{what} line {line}: the columns are {found!r}, expected {_names(accepted)}",
            hint=_expected(accepted),
        )
    return header


def _names(accepted: Sequence[tuple[str, ...]]) -> str:
    return " or ".join(",".join(h) for h in accepted)


def _expected(accepted: Sequence[tuple[str, ...]]) -> str:
    return f"the first line must name the columns: {_names(accepted)}"
