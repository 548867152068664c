"""De-identification of one DICOM dataset: the first, minimal version.

Removes or replaces the attributes that identify a patient, remaps every UID through one
keyed function (so references stay consistent across files, studies and runs), and drops
private elements. The full PS3.15 Annex E profile, as a data table, replaces the attribute
lists below.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from radflow.keys import keyed_hash

METHOD = "radflow basic profile v1: keyed pseudonyms, UIDs remapped"

# Replaced by a keyed pseudonym.
PSEUDONYM_KEYWORDS = ("PatientID", "PatientName")
# Emptied (the attribute stays, its value goes): type 2 in most IODs.
EMPTY_KEYWORDS = (
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "PatientBirthDate",
    "PatientSex",
)
# Removed.
REMOVE_KEYWORDS = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "MilitaryRank",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "RequestingPhysician",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "ProtocolName",
    "StationName",
    "DeviceSerialNumber",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "ContentDate",
    "ContentTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)


def pseudo_uid(secret: bytes, uid: str) -> str:
    """A UID under the 2.25 root (ISO/IEC 9834-8) from a keyed hash: same input, same UID."""
    return "2.25." + str(int(keyed_hash(secret, "uid:" + uid)[:32], 16))


def pseudo_id(secret: bytes, kind: str, value: str, length: int = 12) -> str:
    """A short pseudonym (for patients and studies) that only the secret's holder can map back."""
    return keyed_hash(secret, f"{kind}:{value}")[:length]


def patient_pseudonym(secret: bytes, patient_id: str) -> str:
    return "RF-" + pseudo_id(secret, "patient", patient_id, 16).upper()


def study_pseudonym(secret: bytes, study_uid: str) -> str:
    """The study id the orchestrator sees: run names, report titles, labels."""
    return pseudo_id(secret, "study", study_uid)


def _remap_uids(ds: Dataset, secret: bytes) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _remap_uids(item, secret)
        elif elem.VR == "UI" and elem.value:
            # Standard UIDs (SOP classes, transfer syntaxes) identify nothing: keep them.
            values: Iterable[str] = elem.value if elem.VM > 1 else [elem.value]
            mapped = [v if v in UID_dictionary else pseudo_uid(secret, str(v)) for v in values]
            elem.value = mapped if elem.VM > 1 else mapped[0]


def _strip(ds: Dataset) -> None:
    ds.remove_private_tags()
    for keyword in REMOVE_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in EMPTY_KEYWORDS:
        if keyword in ds:
            setattr(ds, keyword, "")
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _strip(item)


def anonymize_dataset(ds: Dataset, secret: bytes) -> Dataset:
    """De-identify `ds` in place (pixel data untouched) and return it."""
    patient_id = str(ds.get("PatientID", ""))
    _strip(ds)
    _remap_uids(ds, secret)
    pseudonym = patient_pseudonym(secret, patient_id)
    ds.PatientID = pseudonym
    ds.PatientName = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    if "SOPInstanceUID" in ds and hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds
