"""What the table's edition does not list still discloses nothing: attributes the 2021-era
table lacked (Station AE Title, ROI Creator and Interpreter Sequences, Results ID) are rows
now, and an AE title the table does not list is replaced by a dummy, as the listed ones are
removed or cleaned (kept only under Retain Device Identity)."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from radflow.dicom.batch import deidentify_bytes
from radflow.dicom.deid import _DUMMY, DeidConfig, Deidentifier
from radflow.dicom.profile import Option, Profile

SECRET = b"unlisted-deid-secret-3b9e5f1a7c2d"
SITE = "QUIXOTEPACS"  # an AE title naming the site
SURNAME = "Quixotemann"
# Public AE attributes of pydicom's dictionary that Table E.1-1 (2026c) does not list.
UNLISTED_AE = (0x00001030, 0x00000600)  # Move Originator AE Title, Move Destination


def _written(ds: Dataset, options: frozenset[str] = frozenset()) -> bytes:
    data, _ = deidentify_bytes(ds, Deidentifier(DeidConfig(secret=SECRET, options=options)))
    return data


def _dataset() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.10"
    ds.PatientName = f"{SURNAME}^Beatrix"
    ds.PatientID = "MRN-UNLISTED-1"
    return ds


def test_the_issues_unlisted_attributes_are_rows_now() -> None:
    profile = Profile.standard()
    for keyword in ("StationAETitle", "ROICreatorSequence", "ROIInterpreterSequence", "ResultsID"):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        assert tag is not None and profile.action(tag, frozenset()) == "X", keyword


def test_station_ae_roi_people_and_results_id_leave_no_byte() -> None:
    ds = _dataset()
    ds.StationAETitle = SITE
    ds.ResultsID = f"{SURNAME}-R1"
    person = Dataset()
    person.PersonName = f"{SURNAME}^Beatrix"
    person.InstitutionName = SITE
    roi = Dataset()
    roi.ROINumber = 1
    roi.ROICreatorSequence = Sequence([person])
    roi.ROIInterpreterSequence = Sequence([person])
    ds.StructureSetROISequence = Sequence([roi])
    data = _written(ds)
    assert SITE.encode() not in data and SURNAME.lower().encode() not in data.lower()
    out = pydicom.dcmread(io.BytesIO(data), force=True)
    assert list(out.StructureSetROISequence[0].keys()) == [0x30060022]  # ROI Number only


@pytest.mark.parametrize("tag", UNLISTED_AE)
@pytest.mark.parametrize("nested", [False, True])
def test_an_unlisted_ae_title_becomes_a_dummy(tag: int, nested: bool) -> None:
    ds = _dataset()
    holder = Dataset() if nested else ds
    holder.add_new(tag, "AE", SITE)
    if nested:
        ds.ReferencedSeriesSequence = Sequence([holder])
    Deidentifier(DeidConfig(secret=SECRET))(ds)
    assert holder[tag].value == _DUMMY["AE"]


def test_retain_device_identity_keeps_an_unlisted_ae_title() -> None:
    ds = _dataset()
    ds.add_new(UNLISTED_AE[0], "AE", SITE)
    options = frozenset({Option.RETAIN_DEVICE_IDENTITY})
    Deidentifier(DeidConfig(secret=SECRET, options=options))(ds)
    assert ds[UNLISTED_AE[0]].value == SITE


def test_the_fallback_covers_every_unlisted_public_ae_pn_and_date_attribute() -> None:
    """pydicom's dictionary minus the table: each public AE, PN, DA, DT and TM attribute
    gets an action that discloses nothing (never None, never K without an option)."""
    profile = Profile.standard()
    deid = Deidentifier(DeidConfig(secret=SECRET))
    unlisted = [
        (tag, entry[0])
        for tag, entry in pydicom.datadict.DicomDictionary.items()
        if entry[0] in ("AE", "PN", "DA", "DT", "TM") and profile.rule(tag) is None
    ]
    assert len(unlisted) >= 20
    assert {vr: deid.fallback(vr) for _, vr in unlisted} == {
        "AE": "D",
        "PN": "D",
        "DA": "X",
        "DT": "X",
        "TM": "X",
    }


def test_the_birth_date_is_scrubbed_in_the_spellings_documents_are_checked_for() -> None:
    from radflow.dicom.deid import _phi_tokens
    from radflow.dicom.documents import date_spellings

    ds = Dataset()
    ds.PatientBirthDate = "19610304"
    tokens = set(_phi_tokens(ds))
    assert set(date_spellings("19610304")) <= tokens
    assert {"1961-03-04", "04.03.1961", "4.3.1961", "03/04/1961", "4 march 1961"} <= tokens
