"""Non-image objects a real delivery holds, de-identified: a structured report, a key object
selection and an RT structure set with the patient's identity in their text (issue 15).

PS3.15 Table E.1-1 gives Content Sequence (0040,A730) action D: without the Clean
Structured Content option an SR's or KO's content tree does not survive. With the option the
content items are cleaned (E.3.4): text scrubbed of the patient's identifiers, names replaced,
dates handled as the longitudinal options say, UIDs mapped by the same keyed function as the
header, and the tree stays one that highdicom reads back. Every check is on the bytes written.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTStructureSetStorage,
    generate_uid,
)

from radflow.dicom.batch import deidentify_bytes
from radflow.dicom.deid import DeidConfig, Deidentifier, date_shift_days, pseudo_uid, shift_date
from radflow.dicom.profile import Option

SECRET = b"nonimage-deid-secret-7d1e0b5c9a2f4e6d"
SURNAME, GIVEN = "Quixotemann", "Beatrix"
MRN = "MRN80417723"
ACCESSION = "ACC55102938"
BIRTH_DATE = "19610304"
REFERRER = "Vandersloot^Hieronymus"
# Every string that must not be found (case-insensitive) in any output byte.
PHI = (SURNAME, GIVEN, MRN, ACCESSION, BIRTH_DATE, "1961-03-04", "Vandersloot", "Hieronymus")
STUDY_DATE = dt.date(2021, 3, 4)
SR_TEXT = f"{GIVEN} {SURNAME} ({MRN}, born 1961-03-04) has a 4 mm nodule"
CLEAN_SR = frozenset({Option.CLEAN_STRUCTURED_CONTENT})


def _ct(study_uid: str) -> Dataset:
    """The image an SR or KO is about: it carries the patient module highdicom copies."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = f"{SURNAME}^{GIVEN}"
    ds.PatientID = MRN
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.AccessionNumber = ACCESSION
    ds.StudyID = "1"
    ds.StudyDate = STUDY_DATE.strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = REFERRER
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "radflow-test"
    return ds


def _part10(ds: Dataset) -> Dataset:
    """A Part 10 copy through bytes, as the anonymize stage reads it."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _sr() -> tuple[Dataset, Dataset]:
    """A Comprehensive SR whose content names the patient in TEXT, PNAME and CODE items."""
    ct = _ct(generate_uid())
    finding = hd.sr.CodedConcept("121071", "DCM", "Finding")
    items = [
        hd.sr.TextContentItem(
            name=finding, value=SR_TEXT, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        ),
        hd.sr.PnameContentItem(
            name=hd.sr.CodedConcept("121008", "DCM", "Person Observer Name"),
            value=f"{SURNAME}^{GIVEN}",
            relationship_type=hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT,
        ),
        hd.sr.DateContentItem(
            name=hd.sr.CodedConcept("111060", "DCM", "Study Date"),
            value=STUDY_DATE,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        hd.sr.UIDRefContentItem(
            name=hd.sr.CodedConcept("110180", "DCM", "Study Instance UID"),
            value=ct.StudyInstanceUID,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        hd.sr.CodeContentItem(
            name=finding,
            value=hd.sr.CodedConcept("N-1", "99RADFLOW", f"nodule seen on {SURNAME}"),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
    ]
    root = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport)
    root.ContentSequence = hd.sr.ContentSequence(items)
    sr = hd.sr.ComprehensiveSR(
        evidence=[ct],
        content=root,
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="radflow-test",
    )
    return _part10(sr), ct


def _ko() -> tuple[Dataset, Dataset]:
    """A key object selection whose description (a TEXT item) holds accession and surname."""
    ct = _ct(generate_uid())
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=[ct],
        description=f"Key images for {SURNAME}, accession {ACCESSION}",
    )
    ko = hd.ko.KeyObjectSelectionDocument(
        evidence=[ct],
        content=content,
        series_instance_uid=generate_uid(),
        series_number=3,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="radflow-test",
    )
    return _part10(ko), ct


def _rtstruct(surname: str = SURNAME, given: str = GIVEN) -> Dataset:
    """An RT structure set whose label, ROI name and ROI creator name the patient."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.PatientName = f"{surname}^{given}"
    ds.PatientID = MRN
    ds.AccessionNumber = ACCESSION
    ds.StructureSetLabel = f"{surname} GTV"
    frame = generate_uid()
    roi = Dataset()
    roi.ROINumber = 1
    roi.ROIName = f"{surname} lesion"
    roi.ReferencedFrameOfReferenceUID = frame
    roi.ROIGenerationAlgorithm = "MANUAL"
    # ROI Creator Sequence (3006,004D): who drew it, here a person coded by name.
    person = Dataset()
    person.CodeValue = "P-1"
    person.CodingSchemeDesignator = "99LOCAL"
    person.CodeMeaning = f"{surname}, {given} (self-annotated)"
    creator = Dataset()
    creator.PersonIdentificationCodeSequence = Sequence([person])
    roi.ROICreatorSequence = Sequence([creator])
    ds.StructureSetROISequence = Sequence([roi])
    return _part10(ds)


def _written(ds: Dataset, options: frozenset[str] = frozenset()) -> bytes:
    data, _ = deidentify_bytes(ds, Deidentifier(DeidConfig(secret=SECRET, options=options)))
    return data


def _phi_left(data: bytes, phi: tuple[str, ...] = PHI) -> list[str]:
    lowered = data.lower()
    return [s for s in phi if s.lower().encode() in lowered]


def _content_items(ds: Dataset) -> list[Dataset]:
    out = []
    for item in ds.get("ContentSequence", []):
        out.append(item)
        out.extend(_content_items(item))
    return out


def _by_type(ds: Dataset, value_type: str) -> list[Dataset]:
    return [i for i in _content_items(ds) if i.get("ValueType") == value_type]


# (a) the structured report.


def test_sr_content_does_not_survive_the_basic_profile() -> None:
    sr, _ = _sr()
    (text,) = _by_type(sr, "TEXT")
    assert str(text.TextValue) == SR_TEXT  # the input as built
    data = _written(sr)
    assert _phi_left(data) == []
    assert b"nodule" not in data
    assert "ContentSequence" not in pydicom.dcmread(io.BytesIO(data))


def test_clean_structured_content_keeps_the_text_without_the_phi(tmp_path: Path) -> None:
    sr, ct = _sr()
    data = _written(sr, CLEAN_SR)
    assert _phi_left(data) == []
    out = pydicom.dcmread(io.BytesIO(data))
    (text,) = _by_type(out, "TEXT")
    assert str(text.TextValue).endswith("has a 4 mm nodule")
    (pname,) = _by_type(out, "PNAME")
    assert str(pname.PersonName) and SURNAME not in str(pname.PersonName)
    (uidref,) = _by_type(out, "UIDREF")
    assert uidref.UID == pseudo_uid(SECRET, ct.StudyInstanceUID) == out.StudyInstanceUID
    (date,) = _by_type(out, "DATE")
    assert date.Date != STUDY_DATE.strftime("%Y%m%d") and len(date.Date) == 8
    (code,) = [i for i in _by_type(out, "CODE") if i.ConceptCodeSequence[0].CodeValue == "N-1"]
    assert code.ConceptCodeSequence[0].CodeMeaning.startswith("nodule seen on")
    path = tmp_path / "sr.dcm"
    path.write_bytes(data)
    parsed = hd.sr.srread(path)
    assert isinstance(parsed, hd.sr.ComprehensiveSR)
    assert len(parsed.ContentSequence) == len(sr.ContentSequence)


def test_clean_structured_content_shifts_dates_with_modified_dates() -> None:
    sr, _ = _sr()
    options = CLEAN_SR | {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
    out = pydicom.dcmread(io.BytesIO(_written(sr, options)))
    (date,) = _by_type(out, "DATE")
    shift = date_shift_days(SECRET, MRN)
    assert date.Date == shift_date(STUDY_DATE.strftime("%Y%m%d"), shift)
    assert out.StudyDate == date.Date  # the same shift as the header's


# (b) the key object selection.


def test_ko_text_with_accession_and_surname_does_not_survive() -> None:
    ko, _ = _ko()
    (text,) = _by_type(ko, "TEXT")
    assert _phi_left(str(text.TextValue).encode()) == [SURNAME, ACCESSION]
    assert _phi_left(_written(ko)) == []


def test_ko_cleaned_keeps_its_image_reference_mapped(tmp_path: Path) -> None:
    ko, ct = _ko()
    data = _written(ko, CLEAN_SR)
    assert _phi_left(data) == []
    out = pydicom.dcmread(io.BytesIO(data))
    (text,) = _by_type(out, "TEXT")
    assert str(text.TextValue).startswith("Key images for")
    (reference,) = [i for i in _content_items(out) if "ReferencedSOPSequence" in i]
    ref = reference.ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == pseudo_uid(SECRET, ct.SOPInstanceUID)
    path = tmp_path / "ko.dcm"
    path.write_bytes(data)
    parsed = hd.ko.KeyObjectSelectionDocument.from_dataset(pydicom.dcmread(path))
    assert parsed.SOPInstanceUID == out.SOPInstanceUID


# (c) the RT structure set.


def test_rtstruct_label_roi_name_and_creator_do_not_survive() -> None:
    data = _written(_rtstruct())
    assert _phi_left(data) == []
    out = pydicom.dcmread(io.BytesIO(data))
    (roi,) = out.StructureSetROISequence
    assert "ROICreatorSequence" not in roi  # X in Table E.1-1 since 2024


@pytest.mark.parametrize("surname", ["Wu", "Ng"])
def test_rtstruct_short_surname_is_scrubbed_by_clean_descriptors(surname: str) -> None:
    """Clean Descriptors keeps ROI names for selection, scrubbed of the patient's words: a
    two-letter surname counts too (as a whole word, so "Wound" keeps its "Wu")."""
    ds = _rtstruct(surname=surname, given="Mei")
    ds.StructureSetROISequence[0].ROIName = f"{surname} lesion near {surname.lower()}nderlying"
    out = pydicom.dcmread(io.BytesIO(_written(ds, frozenset({Option.CLEAN_DESCRIPTORS}))))
    assert f"{surname} GTV".lower() not in str(out.StructureSetLabel).lower()
    assert str(out.StructureSetLabel).endswith("GTV")
    (roi,) = out.StructureSetROISequence
    assert str(roi.ROIName) == f"* lesion near {surname.lower()}nderlying"


# Real structured reports that ship with pydicom, with the identity injected into their text.

PYDICOM_SR = ("test-SR.dcm", "reportsi.dcm")  # Comprehensive SR, Basic Text SR


def _real_sr(name: str) -> Dataset:
    ds = pydicom.dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / name)
    ds.PatientName = f"{SURNAME}^{GIVEN}"
    ds.PatientID = MRN
    ds.AccessionNumber = ACCESSION
    for item in _by_type(ds, "TEXT"):
        item.TextValue = f"{item.TextValue} ({SURNAME.upper()}, {MRN})"
    return ds


def _shape(ds: Dataset) -> list[tuple[str, str]]:
    """The content tree in document order: value types and relationships."""
    return [(str(i.get("ValueType", "")), str(i.RelationshipType)) for i in _content_items(ds)]


@pytest.mark.parametrize("name", PYDICOM_SR)
def test_real_sr_content_is_removed_by_default(name: str) -> None:
    data = _written(_real_sr(name))
    assert _phi_left(data) == []
    assert "ContentSequence" not in pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("name", PYDICOM_SR)
def test_real_sr_cleaned_keeps_its_tree_and_its_words(name: str) -> None:
    """highdicom reads neither original (one is Basic Text SR, the other has by-reference
    items without a concept name), so validity here is: the same tree, item for item."""
    ds = _real_sr(name)
    shape, texts = _shape(ds), [str(i.TextValue) for i in _by_type(ds, "TEXT")]
    uids = [str(i.UID) for i in _by_type(ds, "UIDREF")]
    data = _written(ds, CLEAN_SR)
    assert _phi_left(data) == []
    out = pydicom.dcmread(io.BytesIO(data))
    assert _shape(out) == shape
    cleaned = [str(i.TextValue) for i in _by_type(out, "TEXT")]
    assert cleaned == [t.replace(SURNAME.upper(), "*").replace(MRN, "*") for t in texts]
    assert [str(i.UID) for i in _by_type(out, "UIDREF")] == [pseudo_uid(SECRET, u) for u in uids]
    assert all(str(i.PersonName) == "ANONYMOUS" for i in _by_type(out, "PNAME"))


# The words scrubbed from text under the clean options.


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        (f"{SURNAME.lower()} born 1961-03-04", "* born *"),
        ("seen 04/03/1961 and 03/04/1961 and 04.03.1961", "seen * and * and *"),
        (f"acc {ACCESSION}, mrn {MRN.lower()}", "acc *, mrn *"),
        ("Dr Vandersloot of St Olaf Hospital", "Dr * of St * *"),  # 'of', 'St' are kept
    ],
)
def test_clean_descriptors_scrubs_the_identifiers_in_their_usual_spellings(
    text: str, cleaned: str
) -> None:
    ds = _ct(generate_uid())
    ds.InstitutionName = "St Olaf Hospital of Bergen"
    ds.StudyDescription = text
    Deidentifier(DeidConfig(secret=SECRET, options=frozenset({Option.CLEAN_DESCRIPTORS})))(ds)
    assert ds.StudyDescription == cleaned
