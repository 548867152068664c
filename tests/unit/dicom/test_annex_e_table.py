"""The shipped Table E.1-1 of DICOM PS3.15 Annex E (radflow/dicom/data/annex_e.csv, written by
build_annex_e.py from the standard's own DocBook XML, edition 2026c) is well-formed, agrees with
pydicom's dictionary, has more single-tag rows than 2024b (617), and carries the standard's
codes for rows whose actions are well known.
"""

from __future__ import annotations

import csv
import re
import tomllib
from importlib.resources import files

import pytest
from pydicom.datadict import tag_for_keyword

DATA = files("radflow.dicom") / "data"

HEADER = [
    "tag",
    "name",
    "keyword",
    "basic",
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_longitudinal_full_dates",
    "retain_longitudinal_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
]
OPTION_COLUMNS = HEADER[4:]
BASIC_CODES = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
OPTION_CODES = {"", "K", "C", "X", "D", "Z", "U"}
TAG_RE = re.compile(r"^[0-9A-Fx]{8}$")
# PS3.15 2026c: 656 rows, one of them prose (private attributes), 3 repeating groups.
ROWS = 655
SINGLE_TAG_ROWS = 652
ROWS_2024B = 617  # single-tag rows of the 2024b table: the floor any later edition keeps

# tag -> (name, basic, {option column: code}); option columns not named must be empty.
SPOT_CHECKS: dict[str, tuple[str, str, dict[str, str]]] = {
    "00100010": ("Patient's Name", "Z", {}),
    "00100020": ("Patient ID", "Z/D", {}),  # Z in the 2021-era snapshot, Z/D by 2024b
    "00080018": ("SOP Instance UID", "U", {"retain_uids": "K"}),
    "00080050": ("Accession Number", "Z", {}),
    "00080080": ("Institution Name", "X/Z/D", {"retain_institution_identity": "K"}),
    "00100030": ("Patient's Birth Date", "Z", {}),
    "00101010": ("Patient's Age", "X", {"retain_patient_characteristics": "K"}),
    "00081030": ("Study Description", "X", {"clean_descriptors": "C"}),
    "00080020": (
        "Study Date",
        "Z",
        {"retain_longitudinal_full_dates": "K", "retain_longitudinal_modified_dates": "C"},
    ),
    "0020000D": ("Study Instance UID", "U", {"retain_uids": "K"}),
    "00181000": ("Device Serial Number", "X/Z/D", {"retain_device_identity": "K"}),
    "50xxxxxx": ("Curve Data", "X", {"clean_graphics": "C"}),
    "60xx4000": ("Overlay Comments", "X", {"clean_graphics": "C"}),
    "60xx3000": ("Overlay Data", "X", {"clean_graphics": "C"}),
    # D, not X: Table E.1-1 (checked in 2020b and the later snapshot) says D for the Basic
    # Profile, C for Clean Structured Content.
    "0040A730": ("Content Sequence", "D", {"clean_structured_content": "C"}),
    "04000561": ("Original Attributes Sequence", "X", {}),
    # Rows of the 2025-2026 editions (none in 2024b).
    "00100011": ("Person Names to Use Sequence", "X", {}),
    "00100016": ("Pronoun Comment", "X", {"clean_descriptors": "C"}),
    "00700006": ("Unformatted Text Value", "D", {"clean_descriptors": "C"}),
    "0040B020": ("Waveform Annotation Sequence", "X/D", {"clean_structured_content": "C"}),
    "00081301": ("Principal Diagnosis Code Sequence", "X", {"clean_descriptors": "C"}),
    "00102162": ("Ethnic Groups", "X", {"retain_patient_characteristics": "K"}),
    # Rows the 2021-era transcription lacked, that radflow used to pass unchanged.
    "00080055": ("Station AE Title", "X", {"retain_device_identity": "C"}),
    "003A0203": ("Channel Label", "X", {"clean_descriptors": "C"}),
    "3006004D": ("ROI Creator Sequence", "X", {}),
    "3006004E": ("ROI Interpreter Sequence", "X", {}),
    "40080040": ("Results ID", "X", {}),
    # The XML puts a zero-width space before this name; the build drops it.
    "003A0329": ("Waveform Filter Description", "X", {"clean_descriptors": "C"}),
}


def _read_csv() -> tuple[list[str], list[dict[str, str]]]:
    text = (DATA / "annex_e.csv").read_text(encoding="utf-8")
    reader = csv.DictReader(text.splitlines())
    return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return _read_csv()[1]


@pytest.fixture(scope="module")
def by_tag(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["tag"]: r for r in rows}


def test_header_is_exact() -> None:
    assert _read_csv()[0] == HEADER


def test_file_is_utf8_with_lf_endings() -> None:
    raw = (DATA / "annex_e.csv").read_bytes()
    raw.decode("utf-8")
    assert b"\r" not in raw
    assert raw.endswith(b"\n")


def test_row_count(rows: list[dict[str, str]]) -> None:
    assert len(rows) == ROWS
    assert sum("x" not in r["tag"] for r in rows) == SINGLE_TAG_ROWS >= ROWS_2024B


def test_basic_codes_allowed(rows: list[dict[str, str]]) -> None:
    bad = {r["tag"]: r["basic"] for r in rows if r["basic"] not in BASIC_CODES}
    assert not bad


def test_option_codes_allowed_or_empty(rows: list[dict[str, str]]) -> None:
    bad = [(r["tag"], c, r[c]) for r in rows for c in OPTION_COLUMNS if r[c] not in OPTION_CODES]
    assert not bad


def test_tags_well_formed_unique_and_sorted(rows: list[dict[str, str]]) -> None:
    tags = [r["tag"] for r in rows]
    assert all(TAG_RE.match(t) for t in tags), [t for t in tags if not TAG_RE.match(t)]
    assert len(set(tags)) == len(tags)
    assert tags == sorted(tags)


def test_every_row_has_a_name(rows: list[dict[str, str]]) -> None:
    assert all(r["name"].strip() == r["name"] and r["name"] for r in rows)
    assert all(r["name"].isprintable() and "\u200b" not in r["name"] for r in rows)


def test_wildcard_tags_have_no_keyword(rows: list[dict[str, str]]) -> None:
    assert all(not r["keyword"] for r in rows if "x" in r["tag"])


@pytest.mark.parametrize("tag", sorted(SPOT_CHECKS))
def test_spot_checks(by_tag: dict[str, dict[str, str]], tag: str) -> None:
    name, basic, options = SPOT_CHECKS[tag]
    row = by_tag[tag]
    assert row["name"] == name
    assert row["basic"] == basic
    assert {c: row[c] for c in OPTION_COLUMNS if row[c]} == options


def test_keywords_round_trip_through_pydicom(rows: list[dict[str, str]]) -> None:
    named = [r for r in rows if "x" not in r["tag"] and r["keyword"]]
    bad = [r["tag"] for r in named if tag_for_keyword(r["keyword"]) != int(r["tag"], 16)]
    assert not bad


def test_metadata_matches_csv(rows: list[dict[str, str]]) -> None:
    meta = tomllib.loads((DATA / "annex_e.toml").read_text(encoding="utf-8"))
    assert meta["standard"] == "DICOM PS3.15 Annex E, Table E.1-1"
    assert meta["edition"] == "PS3.15 2026c"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["sha256"])
    assert meta["sha256"] in meta["origin"]  # the pinned copy is named by its digest
    assert "372bacd889180f8516868278cd8f0e7d2670b84a" in meta["origin"]
    assert meta["source"]
    assert meta["rows"] == len(rows)
    assert meta["single_tag_rows"] == sum("x" not in r["tag"] for r in rows)
    assert meta["repeating_group_rows"] == sum("x" in r["tag"] for r in rows)
    assert meta["omitted"] == ["(gggg,eeee) where gggg is odd: Private Attributes"]
