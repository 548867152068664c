"""The rebuild script reads Table E.1-1 from PS3.15 DocBook XML as the standard prints it,
refuses what it does not recognise, and writes the CSV and its metadata as shipped."""

from __future__ import annotations

import csv
import hashlib
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from radflow.dicom.data import build_annex_e
from radflow.dicom.data.build_annex_e import HEADER, Table, parse, render_csv

HEADERS = [h for h, _ in HEADER]
HEADERS[2] = "Retd. (from PS3.6)"
HEADERS[3] = "In Std. Comp. IOD (from PS3.3)"


def _cell(text: str) -> str:
    return f'<td align="center"><para xml:id="p">{text}</para></td>' if text else "<td/>"


def _row(name: str, tag: str, basic: str, **options: str) -> list[str]:
    cells = [name, tag, "N", "Y", basic] + [""] * 10
    for column, code in options.items():
        cells[[c for _, c in HEADER].index(column)] = code
    return cells


ROWS = [
    _row("Patient's Name", "(0010,0010)", "Z"),
    _row("Overlay Comments", "(60xx,4000)", "X", clean_graphics="C"),
    _row("Private Attributes", "(gggg,eeee) where gggg is odd", "X", retain_safe_private="C"),
    _row("\u200bWaveform Filter Description", "(003A,0329)", "X", clean_descriptors="C"),
    _row("Study Date", "(0008,0020)", "Z", retain_longitudinal_full_dates="K"),
]


def _docbook(
    rows: list[list[str]] = ROWS, headers: list[str] = HEADERS, edition: str = "2026c"
) -> bytes:
    head = "".join(f"<th><para><emphasis>{h}</emphasis></para></th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"""<?xml version="1.0" encoding="utf-8" standalone="no"?>
<book xmlns="http://docbook.org/ns/docbook" label="PS3.15" version="5.0">
  <title>PS3.15</title>
  <subtitle>DICOM PS3.15 {edition} - Security and System Management Profiles</subtitle>
  <chapter><table xml:id="table_E.1-1a"><tbody><tr><td>D</td></tr></tbody></table>
  <table label="E.1-1" xml:id="table_E.1-1"><caption>Application Level Confidentiality Profile
  Attributes</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></chapter>
</book>""".encode()


def test_parse_reads_edition_digest_rows_and_the_omitted_prose_row() -> None:
    xml = _docbook()
    table = parse(xml)
    assert table.edition == "2026c"
    assert table.sha256 == hashlib.sha256(xml).hexdigest()
    assert [r["tag"] for r in table.rows] == ["00080020", "00100010", "003A0329", "60xx4000"]
    by_tag = {r["tag"]: r for r in table.rows}
    assert by_tag["00100010"]["keyword"] == "PatientName"
    assert by_tag["60xx4000"]["keyword"] == ""
    assert by_tag["003A0329"]["name"] == "Waveform Filter Description"
    assert by_tag["60xx4000"]["clean_graphics"] == "C"
    assert table.omitted == ["(gggg,eeee) where gggg is odd: Private Attributes"]


def test_render_csv_has_the_shipped_header_and_one_line_per_row() -> None:
    text = render_csv(parse(_docbook()))
    lines = text.splitlines()
    assert lines[0] == ",".join(build_annex_e.CSV_COLUMNS)
    assert lines[1] == "00080020,Study Date,StudyDate,Z,,,,,,K,,,,"
    assert len(lines) == 5 and text.endswith("\n") and "\r" not in text


@pytest.mark.parametrize(
    ("xml", "problem"),
    [
        (_docbook(headers=HEADERS[:-1]), "header"),
        (_docbook(headers=[*HEADERS[:5], HEADERS[6], HEADERS[5], *HEADERS[7:]]), "header"),
        (_docbook(rows=[_row("Bad", "(0010,0010)", "Q")]), "codes"),
        (_docbook(rows=[_row("Empty", "(0010,0010)", "")]), "codes"),
        (_docbook(rows=[_row("Prose", "(0010,0010) and more", "X")]), "not a tag"),
        (_docbook(rows=[ROWS[0][:-1]]), "cells"),
        (_docbook(rows=[ROWS[0], ROWS[0]]), "twice"),
        (_docbook(edition="x"), "subtitle"),
        (_docbook().replace(b'xml:id="table_E.1-1"', b'xml:id="t"'), "table_E.1-1"),
    ],
)
def test_parse_refuses_rather_than_guess(xml: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse(xml)


def test_main_writes_both_files_with_the_origin(tmp_path: Path) -> None:
    source = tmp_path / "part15.xml"
    source.write_bytes(_docbook())
    build_annex_e.main([str(source), "--origin", "a test's own XML", "--out", str(tmp_path)])
    meta = tomllib.loads((tmp_path / "annex_e.toml").read_text(encoding="utf-8"))
    assert meta["edition"] == "PS3.15 2026c"
    assert meta["origin"] == "a test's own XML"
    assert meta["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (meta["rows"], meta["single_tag_rows"], meta["repeating_group_rows"]) == (4, 3, 1)
    assert (tmp_path / "annex_e.csv").read_text(encoding="utf-8") == render_csv(parse(_docbook()))


def test_the_shipped_csv_is_exactly_what_the_script_renders() -> None:
    """Re-rendering the shipped rows changes no byte: the CSV was written by the script, not
    edited by hand afterwards."""
    shipped = (files("radflow.dicom") / "data" / "annex_e.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(shipped.splitlines()))
    assert render_csv(Table("", "", rows, [])) == shipped
