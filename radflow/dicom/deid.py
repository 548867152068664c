"""De-identify one DICOM dataset by the PS3.15 Annex E profile, with keyed pseudonyms.

The table decides each attribute's action; this module carries the actions out. Every UID
(not only those the table lists: every UI value anywhere, sequences and file meta included)
goes through one keyed function, so references stay consistent across files, studies and
runs. Pixel data are decoded only under the Clean Pixel Data option (burned_in.py);
otherwise the element's bytes are written back as read.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID_dictionary

from radflow import __version__
from radflow.dicom.burned_in import clean_pixel_data
from radflow.dicom.documents import (
    DOCUMENT_MODES,
    DocumentMode,
    date_spellings,
    put_document,
    screen_document,
)
from radflow.dicom.profile import Option, Profile, method_codes
from radflow.errors import QuarantineError
from radflow.keys import keyed_hash

# SOP classes whose images commonly carry text burned into the pixels (PS3.15 E.1.1 says
# such instances need the Clean Pixel Data option: radflow/dicom/burned_in.py).
BURNED_IN_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic
    }
)

# Dummy values (action D) by VR: valid for the VR, and say nothing about anyone.
_DUMMY: dict[str, object] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMOUS",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "UR": "ANONYMIZED",  # a relative URI reference that resolves to nothing
    "OB": b"\x00\x00",  # byte VRs: the shortest even, non-zero length
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}
# File meta elements that can name a sender or a site.
_META_IDENTIFYING = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)
_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_MAX_SHIFT_DAYS = 3650
_PRIVATE_CREATOR_MAX_ELEMENT = 0x00FF


def pseudo_uid(secret: bytes, uid: str) -> str:
    """A UID under the 2.25 root (ISO/IEC 9834-8) from a keyed hash: same input, same UID."""
    return "2.25." + str(int(keyed_hash(secret, "uid:" + uid)[:32], 16))


def patient_pseudonym(secret: bytes, patient_id: str) -> str:
    return "RF-" + keyed_hash(secret, "patient:" + patient_id)[:16].upper()


def study_pseudonym(secret: bytes, study_uid: str) -> str:
    """The study id the orchestrator sees: run names, report titles, labels."""
    return keyed_hash(secret, "study:" + study_uid)[:12]


def date_shift_days(secret: bytes, patient_id: str) -> int:
    """Per patient, deterministic, 1 to 3650 days into the past: intervals are kept."""
    return -(int(keyed_hash(secret, "date-shift:" + patient_id)[:8], 16) % _MAX_SHIFT_DAYS + 1)


def shift_date(value: str, days: int) -> str:
    """Shift a DA (or a DA range 'A-B'); an unparseable value becomes empty, never kept."""
    parts = []
    for part in value.split("-"):
        part = part.strip()
        if not part:
            parts.append("")
            continue
        try:
            day = dt.datetime.strptime(part[:8], "%Y%m%d").date() + dt.timedelta(days=days)
        except (ValueError, OverflowError):  # not a date, or shifted out of years 1-9999
            return ""
        # Not strftime: its %Y does not zero-pad years before 1000 on every platform.
        parts.append(f"{day.year:04d}{day.month:02d}{day.day:02d}")
    return "-".join(parts)


# One DT value from the day on (YYYYMMDD[HH[MM[SS[.F{1,6}]]]][&ZZXX]); a range joins two by "-",
# which is also the sign of a negative UTC offset.
_DT_ONE = r"[0-9]{8}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:\.[0-9]{1,6})?)?)?)?(?:[+-][0-9]{4})?"
_DT_VALUE = re.compile(rf"({_DT_ONE})|({_DT_ONE})?-({_DT_ONE})?")


def shift_datetime(value: str, days: int) -> str:
    """Shift the date part of a DT (or a DT range 'A-B'); time of day and UTC offset are kept
    (whole-day shifts); an unparseable value becomes empty, never kept."""
    match = _DT_VALUE.fullmatch(value.strip())
    if match is None:
        return ""
    single, start, end = match.groups()
    if single is None and not (start or end):
        return ""
    out = []
    for part in [single] if single is not None else [start or "", end or ""]:
        if not part:
            out.append("")
            continue
        shifted = shift_date(part[:8], days)
        if not shifted:
            return ""
        out.append(shifted + part[8:])
    return "-".join(out)


@dataclass(frozen=True)
class DeidConfig:
    """Everything that decides the output besides the input: hashed into content addresses."""

    secret: bytes
    options: frozenset[str] = frozenset()
    safe_private: frozenset[tuple[str, int]] = frozenset()  # (private creator, element byte)
    allow_burned_in: bool = False
    documents: DocumentMode = "quarantine"  # encapsulated documents: see radflow.dicom.documents

    def __post_init__(self) -> None:
        if self.documents not in DOCUMENT_MODES:
            raise ValueError(f"documents must be one of {', '.join(DOCUMENT_MODES)}")
        unknown = set(self.options) - {o.value for o in Option}
        if unknown:
            raise ValueError(f"unknown de-identification options: {', '.join(sorted(unknown))}")
        both = {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
        if both <= self.options:
            raise ValueError("choose one of the two longitudinal temporal options, not both")

    def describe(self) -> dict[str, object]:
        """The parameters without the secret (addresses carry its fingerprint separately)."""
        return {
            "options": sorted(self.options),
            "safe_private": sorted(f"{c}:{e:02X}" for c, e in self.safe_private),
            "allow_burned_in": self.allow_burned_in,
            "documents": self.documents,
            "profile": Profile.standard().edition,
            "method": method_text(self.options),
        }


def method_text(options: Iterable[str]) -> str:
    text = f"radflow {__version__} PS3.15 E.1-1" + (
        "+" + "+".join(sorted(options)) if options else ""
    )
    return text[:64]


@dataclass
class DeidResult:
    """What the caller may keep: original identifiers only for the re-identification map."""

    original_patient_id: str
    original_study_uid: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    scrub_tokens: list[str] = field(default_factory=list, repr=False)
    original_accession: str = ""  # the hospital's key to the study, beside its UID

    def reid_entry(self, secret: bytes) -> str:
        return reid_entry(
            self.original_patient_id,
            self.patient_id,
            self.original_study_uid,
            self.study_uid,
            secret,
            self.original_accession,
        )


def reid_entry(
    patient_id: str,
    patient_pseudonym: str,
    study_uid: str,
    pseudonym_uid: str,
    secret: bytes,
    accession: str = "",
) -> str:
    """A study's entry in the re-identification map (PHI: it belongs in the map's own folder,
    never in the lake): the original identifiers and their pseudonyms, as one JSON line."""
    entry = {
        "patient_id": patient_id,
        "patient_pseudonym": patient_pseudonym,
        "study_uid": study_uid,
        "accession": accession,
        "study_pseudonym_uid": pseudonym_uid,
        "study_id": study_pseudonym(secret, study_uid),
    }
    return json.dumps(entry, sort_keys=True)


class Deidentifier:
    """Applies the profile to datasets; holds per-configuration caches, no per-patient state."""

    def __init__(self, config: DeidConfig, profile: Profile | None = None) -> None:
        self.config = config
        self.profile = profile or Profile.standard()
        self._actions: dict[int, str | None] = {}
        self._uids: dict[str, str] = {}

    def action(self, tag: int) -> str | None:
        try:
            return self._actions[tag]
        except KeyError:
            found = self._actions[tag] = self.profile.action(tag, self.config.options)
            return found

    def fallback(self, vr: str) -> str | None:
        """The action for a public attribute the table's edition does not list.

        Newer editions keep adding dates, times and person names; an unlisted one is treated
        like the listed ones of its kind instead of being kept by default."""
        if vr in ("DA", "DT"):
            if Option.RETAIN_LONGITUDINAL_FULL_DATES in self.config.options:
                return "K"
            return "C" if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.config.options else "X"
        if vr == "TM":
            longitudinal = {
                Option.RETAIN_LONGITUDINAL_FULL_DATES,
                Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            }
            return "K" if longitudinal & self.config.options else "X"
        if vr == "PN":
            return "D"
        if vr == "AE":
            # Every AE title the table lists (Station, Retrieve, Scheduled and Performed
            # Station AE Title, ...) names a device or a site: unlisted ones are no safer.
            return "K" if Option.RETAIN_DEVICE_IDENTITY in self.config.options else "D"
        return None

    def uid(self, value: str) -> str:
        if value in UID_dictionary or Option.RETAIN_UIDS in self.config.options:
            return value  # a standard UID (SOP class, transfer syntax) identifies nobody
        mapped = self._uids.get(value)
        if mapped is None:
            mapped = self._uids[value] = pseudo_uid(self.config.secret, value)
        return mapped

    def check_burned_in(self, ds: Dataset) -> None:
        flag = str(ds.get("BurnedInAnnotation", "")).upper()
        if Option.CLEAN_PIXEL_DATA in self.config.options and (
            flag == "YES" or str(ds.get("SOPClassUID", "")) in BURNED_IN_SOP_CLASSES
        ):
            clean_pixel_data(ds)  # OCR, blank, verify; refuses what it cannot clean
            return
        if self.config.allow_burned_in:
            return
        if flag == "YES":
            raise QuarantineError("burned-in annotation", "BurnedInAnnotation is YES")
        if not flag and str(ds.get("SOPClassUID", "")) in BURNED_IN_SOP_CLASSES:
            raise QuarantineError(
                "possible burned-in annotation",
                "SOP class often carries burned-in text and BurnedInAnnotation is absent",
            )

    def __call__(self, ds: Dataset) -> DeidResult:
        """De-identify `ds` in place and say what it was and what it became."""
        self.check_burned_in(ds)
        # Reads the header's identifiers, so before the walk; a checked PDF goes back after it.
        document = screen_document(ds, self.config.documents)
        patient_id = str(ds.get("PatientID", ""))
        study_uid = str(ds.get("StudyInstanceUID", ""))
        accession = str(ds.get("AccessionNumber", "") or "")
        context = _Context(
            self,
            # Read before the walk empties them; only options bring C actions that scrub.
            tokens=_phi_tokens(ds) if self.config.options else [],
            shift=date_shift_days(self.config.secret, patient_id),
        )
        context.walk(ds)
        if document is not None:
            put_document(ds, document)
        pseudonym = patient_pseudonym(self.config.secret, patient_id)
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = method_text(self.config.options)
        ds.DeidentificationMethodCodeSequence = _method_code_sequence(self.config.options)
        if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.config.options:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif Option.RETAIN_LONGITUDINAL_FULL_DATES in self.config.options:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            for keyword in _META_IDENTIFYING:
                if keyword in meta:
                    delattr(meta, keyword)
        return DeidResult(
            original_patient_id=patient_id,
            original_study_uid=study_uid,
            original_accession=accession,
            patient_id=pseudonym,
            study_uid=str(ds.get("StudyInstanceUID", "")),
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            sop_uid=str(ds.get("SOPInstanceUID", "")),
        )


def _method_code_sequence(options: Iterable[str]) -> Sequence:
    codes = method_codes()
    items = []
    for name in ["basic", *sorted(options)]:
        item = Dataset()  # by tag, not keyword: this runs once per file
        item.add_new(0x00080100, "SH", codes[name].value)  # Code Value
        item.add_new(0x00080102, "SH", "DCM")  # Coding Scheme Designator
        item.add_new(0x00080104, "LO", codes[name].meaning)  # Code Meaning
        items.append(item)
    return Sequence(items)


# The header attributes whose words identify the patient (or the people and place around
# them) wherever else they appear: in free text, labels, SR text and code meanings.
_PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AdmissionID",
    "AccessionNumber",
    "StudyID",
    "PatientBirthDate",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "RequestingPhysician",
    "PhysiciansOfRecord",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "ResponsiblePerson",
    "InstitutionName",
)
# Nested places the same identifiers live in: (sequence, attribute in its items).
_PHI_NESTED = (
    ("OtherPatientIDsSequence", "PatientID"),
    ("RequestAttributesSequence", "AccessionNumber"),
)
# Words shorter than _MIN_TOKEN are not scrubbed (one letter identifies no one, and "of" in an
# institution's name would scrub every text), except the patient's own names down to two
# letters ("Wu", "Ng"); words shorter than _WHOLE_WORD_BELOW are matched only as whole words
# ("Wu" is scrubbed, "Wound" is not).
_MIN_TOKEN = 3
_MIN_NAME_TOKEN = 2
_PATIENT_NAMES = frozenset({"PatientName", "OtherPatientNames", "PatientBirthName"})
_WHOLE_WORD_BELOW = 4


def _phi_tokens(ds: Dataset) -> list[str]:
    """The patient's own identifying words, for scrubbing text (the clean options): each word
    of names, IDs, accession and address, and the birth date as written in the header and in
    the ways people write it (`radflow.dicom.documents.date_spellings`: 1961-03-04,
    04/03/1961, 4.3.1961, 4 March 1961...)."""
    values: list[tuple[object, int]] = [
        (ds.get(k), _MIN_NAME_TOKEN if k in _PATIENT_NAMES else _MIN_TOKEN) for k in _PHI_KEYWORDS
    ]
    for sequence, keyword in _PHI_NESTED:
        values += [(item.get(keyword), _MIN_TOKEN) for item in ds.get(sequence) or []]
    tokens: set[str] = set()
    for value, shortest in values:
        for v in value if isinstance(value, MultiValue) else [value]:
            for word in re.split(r"[\^\s,=]+", str(v or "")):
                if len(word) >= shortest:
                    tokens.add(word)
                tokens |= set(date_spellings(word))  # empty unless the word is a DA
    return sorted(tokens, key=lambda t: (-len(t), t))


def _scrub_pattern(tokens: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive alternation, longest first; short tokens as whole words only."""
    if not tokens:
        return None
    alnum_before, alnum_after = r"(?<![^\W_])", r"(?![^\W_])"
    parts = [
        alnum_before + re.escape(t) + alnum_after if len(t) < _WHOLE_WORD_BELOW else re.escape(t)
        for t in tokens
    ]
    return re.compile("|".join(parts), re.IGNORECASE)


def _uid_values(ds: Dataset, tag: BaseTag) -> list[str]:
    """A UI element's values, read from its raw bytes where it has not been decoded yet.

    Mapping every UID is the walk's most frequent decode, and pydicom's element conversion
    costs more than the mapping itself; the raw value is split here as pydicom's convert_UI
    does (default character repertoire, trailing NULs and spaces removed, backslashes)."""
    raw = ds.get_item(tag, keep_deferred=True)
    if isinstance(raw, DataElement) or raw.value is None:  # decoded already, or deferred
        value = ds[tag].value
        if isinstance(value, MultiValue):
            return [str(v) for v in value]
        return [str(value)] if value else []
    text = raw.value.decode("iso8859").rstrip("\0 ")
    return text.split("\\") if text else []


def _vr(ds: Dataset, tag: BaseTag) -> str:
    """The element's VR without decoding its value (the dictionary's for implicit VR)."""
    vr = ds.get_item(tag, keep_deferred=True).VR
    if vr and vr != "UN":  # UN: pydicom decodes it with the dictionary's VR, so must we
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return str(vr or "UN")


class _Context:
    """One dataset's walk: the patient's scrub pattern and date shift.

    Sequences follow PS3.15 E.1.1's note to Table E.1-1a: the action applies to the sequence
    and all its contents. X removes it, Z empties it, D removes it (see `_sequence`); K, U
    (X/Z/U*: the contained UIDs replaced) and an unlisted sequence keep it and apply the
    profile to each item; C (an enabled clean option) keeps it and cleans each item: every
    attribute still gets its own row's action, and text the table does not list (an SR's
    Text Value, a code's Code Meaning) is scrubbed of the patient's words."""

    def __init__(self, deid: Deidentifier, tokens: list[str], shift: int) -> None:
        self.deid = deid
        self.options = deid.config.options
        self.shift = shift
        self.pattern = _scrub_pattern(tokens)

    def walk(self, ds: Dataset, clean: bool = False) -> None:
        """Act on tags and VRs first: an element is decoded only when its action needs its
        value, so kept elements are written back as the raw bytes that were read. `clean`:
        the items of a sequence being cleaned (C), at any depth below it."""
        kept_creators: set[tuple[int, int]] = set()
        retain_private = Option.RETAIN_SAFE_PRIVATE in self.options
        for tag in list(ds.keys()):
            if not tag.is_private:
                self._public(ds, tag, clean)
            elif retain_private:
                self._private(ds, tag, kept_creators, clean)
            else:
                del ds[tag]  # creators too: nothing private is kept without the option
        # Private creators that no longer reserve any kept element go too, and so does
        # (gggg,0000-000F): not creators, but private all the same.
        tags = list(ds.keys())  # a Dataset iterates decoded elements; its keys are bare tags
        for tag in [t for t in tags if t.is_private]:
            if (
                tag.element <= _PRIVATE_CREATOR_MAX_ELEMENT
                and (tag.group, tag.element) not in kept_creators
            ):
                del ds[tag]

    def _private(self, ds: Dataset, tag: BaseTag, kept: set[tuple[int, int]], clean: bool) -> None:
        if tag.element <= _PRIVATE_CREATOR_MAX_ELEMENT:
            return  # creators are decided after their elements
        if Option.RETAIN_SAFE_PRIVATE in self.options:
            block = tag.element >> 8
            creator = ds.get((tag.group << 16) | block)
            allowed = self.deid.config.safe_private
            if creator is not None and (str(creator.value), tag.element & 0xFF) in allowed:
                kept.add((tag.group, block))
                elem = ds[tag]
                if elem.VR == "SQ":
                    for item in elem.value:
                        self.walk(item, clean)
                return
        del ds[tag]

    def _public(self, ds: Dataset, tag: BaseTag, clean: bool) -> None:
        vr = _vr(ds, tag)
        action = self.deid.action(int(tag)) or self.deid.fallback(vr)
        if action == "X":
            del ds[tag]
            return
        if vr == "SQ":
            self._sequence(ds, tag, action, clean)
            return
        if action == "K":
            return  # kept as read, never decoded (a K UID too: Retain Device Identity's)
        if vr != "UI" and action is None:
            if clean and vr in _TEXT_VRS and self.pattern is not None:
                elem = ds[tag]
                elem.value = _each(elem.value, self._scrub)
            return  # otherwise kept as read, never decoded
        if vr == "UI":
            if action == "Z":
                ds[tag] = DataElement(tag, "UI", "")
            else:
                uids = _uid_values(ds, tag)
                if uids:
                    mapped = [self.deid.uid(u) for u in uids]
                    ds[tag] = DataElement(tag, "UI", mapped if len(mapped) > 1 else mapped[0])
            return
        if action in ("Z", "D") and " or " not in vr:
            # A new element of the same VR: the old value is never decoded, only replaced.
            ds[tag] = DataElement(tag, vr, None if action == "Z" else _DUMMY.get(vr, ""))
            return
        elem = ds[tag]
        if action == "Z":
            elem.value = None  # zero length, whatever the VR
        elif action == "D":
            elem.value = _DUMMY.get(elem.VR, "")
        elif action == "U":
            elem.value = self._uids(elem) if elem.value else ""
        elif action == "C":
            self._clean(ds, elem)

    def _sequence(self, ds: Dataset, tag: BaseTag, action: str | None, clean: bool) -> None:
        elem = ds[tag]
        if action == "Z":
            elem.value = Sequence([])
        elif action == "D":
            # D asks for "a non-zero length value that may be a dummy". For a sequence that
            # would be an item built to the IOD's macro, which radflow does not carry; of the
            # two choices left, removal rather than an empty sequence. An empty one is zero
            # length, so no closer to D, and the table gives D alone to Type 1 and 1C
            # attributes (E.1.1's note: Verifying Observer Sequence "is described as D since
            # it is Type 1C"), for which an empty sequence is never valid while an absent one
            # can be: Content Sequence is required only "if the item has children", so an SR
            # root container without it is a valid, empty tree. The same note says a D
            # sequence met outside the IOD that defines it is "treated as X". And nothing
            # nested in a removed sequence can survive.
            del ds[tag]
        else:  # K, U, C or unlisted: keep the items and apply the profile to each
            for item in elem.value:
                self.walk(item, clean or action == "C")

    def _uids(self, elem: DataElement) -> object:
        if elem.VM > 1:
            return [self.deid.uid(str(v)) for v in elem.value]
        return self.deid.uid(str(elem.value))

    def _clean(self, ds: Dataset, elem: DataElement) -> None:
        """C on a non-sequence attribute: only an enabled option resolves to it."""
        vr = elem.VR
        if vr in ("DA", "DT", "TM"):
            if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options:
                if vr == "DA":
                    elem.value = _each(elem.value, lambda v: shift_date(v, self.shift))
                elif vr == "DT":
                    elem.value = _each(elem.value, lambda v: shift_datetime(v, self.shift))
                # TM: a whole-day shift leaves the time of day as it was.
            else:
                elem.value = ""
        elif vr in _TEXT_VRS:
            elem.value = _each(elem.value, self._scrub)
        elif vr == "AE":
            elem.value = _DUMMY["AE"]  # an AE title of similar meaning that names no device
        else:
            # Curves and overlay bitmaps are not cleaned value by value here: remove.
            del ds[elem.tag]

    def _scrub(self, text: str) -> str:
        return self.pattern.sub("*", text) if self.pattern else text


def _each(value: object, fn: Callable[[str], str]) -> object:
    """Apply `fn` to a value or to each value of a multi-valued element."""
    if isinstance(value, MultiValue):
        return [fn(str(v)) for v in value]
    return fn(str(value or ""))
