"""Every row of Table E.1-1 is applied, action by action, at any depth.

For each row and each of its columns (the Basic Profile, and every option column the row
fills), one attribute of the row's VR is put at the top level of a dataset, one level down in
an item of a sequence the table does not list (kept, its items cleaned by the profile), and
two levels down; the Deidentifier runs with that column's option; the outcome is checked
against the action read from the CSV here, independently of `Profile.action`:
X removed, Z empty, D a dummy other than the value, U the keyed UID, K unchanged, C cleaned
(dates shifted or emptied as the longitudinal option says, text scrubbed of the patient's
words, AE titles replaced, other values removed). Sequences: X and D remove, Z empties, K, U
and C keep their items and apply the profile inside (a nested UID is mapped, a nested text is
scrubbed only under C).

A tag pydicom 3.0's dictionary does not know yet (25 rows added in 2025-2026) is read from an
implicit VR file as UN, its value undecoded: that is how it is checked here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from radflow.dicom.deid import (
    _DUMMY,
    DeidConfig,
    Deidentifier,
    date_shift_days,
    pseudo_uid,
    shift_date,
    shift_datetime,
)
from radflow.dicom.profile import Option
from radflow.errors import QuarantineError

SECRET = b"annex-e-applied-secret-0c4f9a81d2e7"
PATIENT_ID = "MRN-APPLIED-1"
SURNAME = "Quixotemann"
SHIFT = date_shift_days(SECRET, PATIENT_ID)
NESTED_UID = "1.2.826.0.1.3680043.10.999.2"
# Two unlisted sequences: items that are kept, with the profile applied inside.
OUTER, INNER = 0x00081115, 0x0008114A  # Referenced Series / Referenced Instance Sequence
# Attributes the Deidentifier itself writes at the top level after the walk.
WRITTEN_BY_RADFLOW = {0x00100010, 0x00100020, 0x00120062, 0x00120063, 0x00120064, 0x00280303}
# An Encapsulated Document at the top level makes the instance a document, which
# radflow.dicom.documents quarantines before the table is applied (tests/unit/dicom/
# test_documents.py); nested, the row's own action applies.
ENCAPSULATED_DOCUMENT = 0x00420011
TEXT_VRS = {"LO", "LT", "SH", "ST", "UC", "UT"}
# A concrete tag for each repeating-group row (a group other than the first, on purpose).
CONCRETE = {"50xxxxxx": 0x50023000, "60xx3000": 0x60023000, "60xx4000": 0x60024000}

_VALUES: dict[str, Any] = {
    "AE": SURNAME.upper(),
    "AS": "045Y",
    "AT": 0x00100010,
    "CS": "ORIGINAL",
    "DA": "20210304",
    "DS": "12.5",
    "DT": "20210304101500",
    "FD": 1.5,
    "FL": 1.5,
    "IS": "42",
    "LO": f"{SURNAME} keepme",
    "LT": f"{SURNAME} keepme",
    "OB": b"\x01\x02\x03\x04",
    "OW": b"\x01\x02\x03\x04",
    "PN": f"{SURNAME}^Keepme",
    "SH": f"{SURNAME} keep",
    "SL": 7,
    "SS": 7,
    "ST": f"{SURNAME} keepme",
    "TM": "101500",
    "UC": f"{SURNAME} keepme",
    "UI": "1.2.826.0.1.3680043.10.999.1",
    "UL": 7,
    "UN": b"\x01\x02\x03\x04",
    "UR": "http://example.org/quixotemann",
    "US": 7,
    "UT": f"{SURNAME} keepme",
}


def _rows() -> list[dict[str, str]]:
    text = (files("radflow.dicom") / "data" / "annex_e.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


ROWS = _rows()
COLUMNS = [c for c in ROWS[0] if c not in ("tag", "name", "keyword")]


@dataclass(frozen=True)
class Case:
    tag: int
    vr: str
    column: str
    action: str  # the code the column gives, resolved as radflow resolves combined codes

    @property
    def options(self) -> frozenset[str]:
        return frozenset() if self.column == "basic" else frozenset({self.column})


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[-1]  # "OB or OW" -> OW, "US or SS" -> SS
    except KeyError:
        return "UN"


def _cases() -> list[Any]:
    cases = []
    for row in ROWS:
        tag = CONCRETE.get(row["tag"]) or int(row["tag"], 16)
        for column in COLUMNS:
            if row[column]:
                # Table E.1-1a's combined codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*): the last one.
                action = row[column].split("/")[-1].rstrip("*")
                case = Case(tag, _vr(tag), column, action)
                cases.append(pytest.param(case, id=f"{row['tag']}-{column}"))
    return cases


def _element(case: Case) -> DataElement:
    if case.vr == "SQ":
        item = Dataset()
        item.CodeMeaning = f"{SURNAME} keepme"
        item.ReferencedSOPInstanceUID = NESTED_UID
        return DataElement(case.tag, "SQ", Sequence([item]))
    return DataElement(case.tag, case.vr, _VALUES[case.vr])


def _dataset(case: Case, depth: int) -> Dataset:
    ds = Dataset()
    ds.PatientName = f"{SURNAME}^Beatrix"
    ds.PatientID = PATIENT_ID
    holder = ds
    for sequence in (OUTER, INNER)[:depth]:
        item = Dataset()
        holder.add(DataElement(sequence, "SQ", Sequence([item])))
        holder = item
    holder.add(_element(case))
    return ds


def _at(ds: Dataset, tag: int, depth: int) -> DataElement | None:
    holder = ds
    for sequence in (OUTER, INNER)[:depth]:
        holder = holder[sequence].value[0]
    return holder.get(tag)


def _mapped(uid: str, options: frozenset[str]) -> str:
    return uid if Option.RETAIN_UIDS in options else pseudo_uid(SECRET, uid)


def _check(case: Case, before: DataElement, out: DataElement | None) -> None:
    action, vr = case.action, case.vr
    if action == "X" or (vr == "SQ" and action == "D"):
        assert out is None
        return
    if action == "C" and vr not in TEXT_VRS | {"DA", "DT", "TM", "AE", "SQ"}:
        assert out is None  # nothing to clean value by value: removed
        return
    assert out is not None
    if vr == "SQ":
        if action == "Z":
            assert len(out.value) == 0
            return
        (item,) = out.value
        assert item.ReferencedSOPInstanceUID == _mapped(NESTED_UID, case.options)
        scrubbed = action == "C"
        assert (SURNAME in item.CodeMeaning) is not scrubbed
        assert item.CodeMeaning.endswith("keepme")
        return
    if action == "Z":
        assert out.is_empty
    elif action == "K":
        assert out.value == before.value
    elif vr == "UI":  # U, and D, on a UID: the keyed UID
        assert out.value == _mapped(str(before.value), case.options) != before.value
    elif action == "D":
        assert not out.is_empty and out.value != before.value
        assert out.value == _DUMMY[vr]
    elif action == "C":
        _check_clean(case, before.value, out.value)
    else:
        pytest.fail(f"unexpected action {action} for VR {vr}")


def _check_clean(case: Case, before: Any, after: Any) -> None:
    vr = case.vr
    modified = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in case.options
    value = after[0] if isinstance(after, MultiValue) else after
    if vr == "DA":
        assert value == (shift_date(before, SHIFT) if modified else "")
    elif vr == "DT":
        assert value == (shift_datetime(before, SHIFT) if modified else "")
    elif vr == "TM":
        assert value == (before if modified else "")  # whole-day shifts keep the time of day
    elif vr == "AE":
        assert value == _DUMMY["AE"]
    else:
        assert str(value) == before.replace(SURNAME, "*")


@pytest.mark.parametrize("case", _cases())
def test_every_row_is_applied_at_any_depth(case: Case) -> None:
    for depth in (0, 1, 2):
        if depth == 0 and case.tag in WRITTEN_BY_RADFLOW:
            continue
        ds = _dataset(case, depth)
        if depth == 0 and case.tag == ENCAPSULATED_DOCUMENT:
            with pytest.raises(QuarantineError, match="encapsulated document"):
                Deidentifier(DeidConfig(secret=SECRET, options=case.options))(ds)
            continue
        before = _element(case)
        Deidentifier(DeidConfig(secret=SECRET, options=case.options))(ds)
        if depth:  # the kept sequences themselves survive, one item each
            assert len(ds[OUTER].value) == 1
        _check(case, before, _at(ds, case.tag, depth))


def test_the_cases_cover_every_row_every_column_and_action() -> None:
    cases = [p.values[0] for p in _cases()]
    assert {c.tag for c in cases} >= {int(r["tag"], 16) for r in ROWS if "x" not in r["tag"]}
    assert len(cases) == sum(bool(r[c]) for r in ROWS for c in COLUMNS)
    assert {c.column for c in cases} == set(COLUMNS) - {"retain_safe_private"}
    assert {c.action for c in cases} == {"X", "Z", "D", "U", "K", "C"}
    assert {c.vr for c in cases} >= {"SQ", "UI", "UN", "DA", "DT", "TM", "AE", "PN", "OB"}
