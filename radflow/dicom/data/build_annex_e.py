"""Rebuild annex_e.csv and annex_e.toml from the DICOM standard's own PS3.15 DocBook XML.

    python -m radflow.dicom.data.build_annex_e PART15_XML --origin "where the file came from"

NEMA publishes every part of the standard as DocBook XML
(https://dicom.nema.org/medical/dicom/<edition>/source/docbook/part15/part15.xml). The
edition is read from the document's own <subtitle> ("DICOM PS3.15 2026c - ..."), never
from the file name, and the file's SHA-256 is recorded, so anyone can check that a rebuild
from the same bytes gives the same table. Written by hand (a few lines of the standard
library's ElementTree) because no maintained package exposes Table E.1-1 as data.

The parser refuses rather than guess: the header must be the 15 columns the standard has
printed since 2017, each body row must have 15 cells, every tag cell must be a tag (or the
one prose row, Private Attributes) and every code one of Table E.1-1a's.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import keyword_for_tag

_DOCBOOK = "{http://docbook.org/ns/docbook}"
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
_HERE = Path(__file__).parent
STANDARD = "DICOM PS3.15 Annex E, Table E.1-1"

# The table's printed headers, in order, and the CSV column each one becomes (None: not kept).
HEADER: tuple[tuple[str, str | None], ...] = (
    ("Attribute Name", "name"),
    ("Tag", "tag"),
    ("Retd.", None),
    ("In Std. Comp. IOD", None),
    ("Basic Prof.", "basic"),
    ("Rtn. Safe Priv. Opt.", "retain_safe_private"),
    ("Rtn. UIDs Opt.", "retain_uids"),
    ("Rtn. Dev. Id. Opt.", "retain_device_identity"),
    ("Rtn. Inst. Id. Opt.", "retain_institution_identity"),
    ("Rtn. Pat. Chars. Opt.", "retain_patient_characteristics"),
    ("Rtn. Long. Full Dates Opt.", "retain_longitudinal_full_dates"),
    ("Rtn. Long. Modif. Dates Opt.", "retain_longitudinal_modified_dates"),
    ("Clean Desc. Opt.", "clean_descriptors"),
    ("Clean Struct. Cont. Opt.", "clean_structured_content"),
    ("Clean Graph. Opt.", "clean_graphics"),
)
OPTION_COLUMNS = [c for _, c in HEADER[5:] if c]
CSV_COLUMNS = ["tag", "name", "keyword", "basic", *OPTION_COLUMNS]
# Table E.1-1a: every code a cell may hold.
CODES = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})
_TAG = re.compile(r"\(([0-9A-Fx]{4}),([0-9A-Fx]{4})\)")
_PROSE_ROW = "(gggg,eeee) where gggg is odd"
# Characters the XML carries inside names that are not part of them (a zero-width space
# precedes "Waveform Filter Description" in 2026c).
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\ufeff"))


@dataclass(frozen=True)
class Table:
    edition: str
    sha256: str
    rows: list[dict[str, str]]
    omitted: list[str]


def _text(elem: ET.Element) -> str:
    return " ".join("".join(elem.itertext()).translate(_INVISIBLE).split())


def parse(xml: bytes) -> Table:
    """Table E.1-1 of one PS3.15 DocBook document."""
    root = ET.fromstring(xml)  # the standard's own file: no DTD, no external entities
    subtitle = root.find(f"{_DOCBOOK}subtitle")
    title = _text(subtitle) if subtitle is not None else ""
    match = re.match(r"DICOM PS3\.15 (\d{4}[a-z]?)\b", title)
    if match is None:
        raise ValueError("no 'DICOM PS3.15 <edition>' subtitle: not a PS3.15 DocBook document")
    table = next(
        (t for t in root.iter(f"{_DOCBOOK}table") if t.get(_XML_ID) == "table_E.1-1"), None
    )
    if table is None:
        raise ValueError("no table with xml:id table_E.1-1")
    header = [_text(th) for th in table.iter(f"{_DOCBOOK}th")]
    expected = [h for h, _ in HEADER]
    # "Retd. (from PS3.6)": the olink's text is empty in the XML, so compare the prefix.
    if len(header) != len(expected) or any(
        not got.startswith(want) for got, want in zip(header, expected, strict=True)
    ):
        raise ValueError(f"unexpected Table E.1-1 header: {header}")
    rows: list[dict[str, str]] = []
    omitted: list[str] = []
    body = table.find(f"{_DOCBOOK}tbody")
    for tr in body.findall(f"{_DOCBOOK}tr") if body is not None else []:
        cells = [_text(td) for td in tr.findall(f"{_DOCBOOK}td")]
        if len(cells) != len(HEADER):
            raise ValueError(f"a Table E.1-1 row with {len(cells)} cells: {cells[:2]}")
        named = {column: cell for (_, column), cell in zip(HEADER, cells, strict=True) if column}
        if named["tag"] == _PROSE_ROW:
            omitted.append(f"{named['tag']}: {named['name']}")
            continue
        tag = _TAG.fullmatch(named["tag"])
        if tag is None:
            raise ValueError(f"not a tag: {named['tag']!r}")
        codes = [named["basic"], *(named[c] for c in OPTION_COLUMNS)]
        bad = [c for c in codes if c and c not in CODES]
        if bad or not named["basic"]:
            raise ValueError(f"codes {bad or ['(empty basic)']} in row {named['tag']}")
        key = (tag.group(1) + tag.group(2)).upper().replace("X", "x")
        keyword = "" if "x" in key else keyword_for_tag(int(key, 16))
        rows.append({**named, "tag": key, "keyword": keyword})
    rows.sort(key=lambda r: r["tag"])
    tags = [r["tag"] for r in rows]
    if len(set(tags)) != len(tags):
        raise ValueError("a tag is listed twice")
    return Table(match.group(1), hashlib.sha256(xml).hexdigest(), rows, omitted)


def render_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: r[c] for c in CSV_COLUMNS} for r in table.rows)
    return out.getvalue()


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(table: Table, origin: str) -> str:
    wildcard = sum("x" in r["tag"] for r in table.rows)
    single = len(table.rows) - wildcard
    omitted = ", ".join(_toml_string(o) for o in table.omitted)
    return f"""\
# Metadata for annex_e.csv: DICOM PS3.15 Annex E, Table E.1-1, one CSV row per table row.
# Written by `python -m radflow.dicom.data.build_annex_e` (radflow/dicom/data/build_annex_e.py);
# rebuild from the file named in `origin` (its SHA-256 below), do not edit by hand.
#
# Action codes (column `basic` and the option columns), Table E.1-1a:
#   D  replace with a non-zero-length value (may be a dummy) consistent with the VR
#   Z  replace with a zero-length value, or a non-zero-length dummy consistent with the VR
#   X  remove (a sequence with all its items)
#   K  keep (unchanged for non-sequence attributes; sequences are cleaned)
#   C  clean: replace with values of similar meaning known not to identify, consistent with the VR
#   U  replace with a non-zero-length UID, internally consistent within the set of instances
# Combined codes depend on the Attribute's Type in the IOD (X for Type 3, Z for Type 2, D or
# U for Type 1). radflow does not carry the IOD tables, so it applies the LAST code, which is
# valid for every Type and still discloses nothing (an empty or dummy value, or a new UID):
#   Z/D -> D, X/Z -> Z, X/D -> D, X/Z/D -> D, X/Z/U* -> U   (see radflow.dicom.profile._resolve)
# On a sequence, radflow's D removes it (see radflow.dicom.deid._Context._sequence for why).
# An empty option column means that option does not change the Basic Profile action.
# Keywords come from pydicom's data dictionary; a tag it does not know yet has none.
# Every row comes from the source file: none is added or changed by hand.
#
# Omitted: the one table row that is not a tag, "Private attributes" (gggg,eeee) where gggg is
# odd (basic X, Retain Safe Private Option C). It is the only row using Retain Safe Private, so
# that column is empty throughout the CSV; code handles private tags separately.

standard = "{STANDARD}"
edition = "PS3.15 {table.edition}"
origin = {_toml_string(origin)}
sha256 = "{table.sha256}"
source = \"\"\"The DICOM standard's own DocBook XML of PS3.15 (NEMA publishes it at \\
https://dicom.nema.org/medical/dicom/{table.edition}/source/docbook/part15/part15.xml); the \\
edition is the document's own <subtitle>, the digest is of the bytes read.\"\"\"
rows = {len(table.rows)}
single_tag_rows = {single}
repeating_group_rows = {wildcard}
omitted = [{omitted}]
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="PS3.15 DocBook XML (part15.xml)")
    parser.add_argument(
        "--origin",
        required=True,
        help="where the file came from (URL, or repository@commit:path), recorded as given",
    )
    parser.add_argument("--out", type=Path, default=_HERE, help="folder for the two files")
    args = parser.parse_args(argv)
    table = parse(args.source.read_bytes())
    (args.out / "annex_e.csv").write_text(render_csv(table), encoding="utf-8", newline="")
    (args.out / "annex_e.toml").write_text(render_toml(table, args.origin), encoding="utf-8")
    print(f"PS3.15 {table.edition}: {len(table.rows)} rows written, sha256 {table.sha256}")


if __name__ == "__main__":
    main()
