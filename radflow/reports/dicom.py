"""DICOM results a PACS can take back: a Comprehensive SR (TID 1500 measurement report) with
the score, the threshold, the call and the model (and, when the ROI was written as a SEG, the
segment and its volume), and an Encapsulated PDF of the study report. Both go into new series of the
de-identified study (same StudyInstanceUID, same pseudonymous patient).

UIDs are name-based (UUID v5 under 2.25) on the score's key, and dates come from the report,
so the same score gives the same bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian

from radflow import __version__
from radflow.reports.facts import StudyFacts

# radflow's own codes (a private coding scheme, as PS3.16 allows) for what no standard code names.
SCHEME = "99RADFLOW"
SCORE = Code("RF0001", SCHEME, "Probability of positive finding")
THRESHOLD = Code("RF0002", SCHEME, "Operating threshold")
CALL = Code("RF0003", SCHEME, "Call at the operating threshold")
# The call's values: SNOMED CT's qualifier values Positive and Negative.
CALLS = {"positive": codes.SCT.Positive, "negative": codes.SCT.Negative}
UNITLESS = Code("1", "UCUM", "no units")
SR_SERIES_NUMBER = 9001
PDF_SERIES_NUMBER = 9002
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
_STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


@dataclass(frozen=True)
class SegmentedRoi:
    """The ROI as a segment of a SEG instance, and its volume: what the SR's volumetric
    measurement group (TID 1411) refers to and measures."""

    seg: Dataset  # the Segmentation instance (its SOP Class and Instance UIDs are referenced)
    segment_number: int
    source_series_uid: str  # the series the segmentation was made on
    volume_mm3: float
    source: str = "rule"  # where the ROI came from (VolumeQC.roi_source)


def caret_patient_name(ds: Dataset) -> Dataset:
    """`ds` with a one-component PatientName (the pseudonym `RF-…`) written `RF-…^`: the same
    name (PS3.5 6.2.1: trailing empty components may be left out), in the form highdicom
    takes without a warning for each SR and SEG it copies the patient into. In place."""
    name = str(ds.get("PatientName", "") or "")
    if name and "^" not in name and "=" not in name:
        ds.PatientName = name + "^"
    return ds


def name_uid(*parts: str) -> str:
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join(('radflow', *parts))).int}"


def dated(ds: Dataset, date: str) -> Dataset:
    """highdicom stamps the wall clock; the report's date replaces it."""
    for keyword in ("ContentDate", "SeriesDate", "InstanceCreationDate"):
        if keyword in ds:
            setattr(ds, keyword, date)
    for keyword in ("ContentTime", "SeriesTime", "InstanceCreationTime"):
        if keyword in ds:
            setattr(ds, keyword, "000000")
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + "000000"
    return ds


def score_sr(
    facts: StudyFacts, evidence: Sequence[Dataset], key: str, roi: SegmentedRoi | None = None
) -> Dataset:
    """A Comprehensive SR: one measurement group, tracked by the study pseudonym, holding the
    score and the threshold, and the call as a qualitative evaluation (positive or negative
    at the threshold), with the model as the algorithm (TID 4019); with `roi`, a second,
    volumetric group (TID 1411) that references the ROI's segment and holds its volume. The
    SEG then joins the evidence."""
    algorithm = hd.sr.AlgorithmIdentification(name=facts.model_id, version=facts.model_version)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=name_uid(key, "tracking"), identifier=f"radflow score {facts.study_id}"
        ),
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=SCORE, value=round(facts.score, 6), unit=UNITLESS),
            hd.sr.Measurement(name=THRESHOLD, value=round(facts.threshold, 6), unit=UNITLESS),
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=CALL, value=CALLS[facts.call])],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(evidence[0]),
        ],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=name_uid("device", facts.model_id), name="radflow", model_name=facts.model_id
        ),
    )
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    ] = [group]
    if roi is not None:
        groups.append(_roi_group(roi, key))
        evidence = [*evidence, roi.seg]
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=list(evidence),
        content=content[0],
        series_instance_uid=name_uid(key, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=name_uid(key, "sr"),
        instance_number=1,
        manufacturer="radflow",
        is_complete=True,
        series_description="radflow score (research use only)",
    )
    return dated(sr, facts.report_date)


def _roi_group(
    roi: SegmentedRoi, key: str
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411: the ROI by reference to its segment (and the series it was made on), and its
    volume in mm3, made by radflow (the ROI's own maker is in the SEG's segment)."""
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=name_uid(key, "roi-tracking"), identifier=f"radflow ROI from {roi.source}"
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=roi.seg.SOPClassUID,
            sop_instance_uid=roi.seg.SOPInstanceUID,
            segment_number=roi.segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(roi.source_series_uid),
        ),
        finding_type=codes.SCT.Lesion,
        algorithm_id=hd.sr.AlgorithmIdentification(name="radflow", version=__version__),
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=round(roi.volume_mm3, 3),
                unit=codes.UCUM.CubicMillimeter,
            )
        ],
    )


def encapsulated_pdf(facts: StudyFacts, pdf: bytes, evidence: Dataset, key: str) -> Dataset:
    """An Encapsulated PDF instance (PS3.3 A.45.1).

    Built with pydicom by hand: highdicom has no Encapsulated Document class."""
    ds = Dataset()
    for keyword in _STUDY_ATTRIBUTES:
        ds[keyword] = evidence[keyword] if keyword in evidence else _empty(keyword)
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = name_uid(key, "pdf")
    ds.Modality = "DOC"
    ds.ConversionType = "WSD"  # workstation: made by software, not scanned
    ds.SeriesInstanceUID = name_uid(key, "pdf-series")
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDescription = "radflow study report (research use only)"
    ds.InstanceNumber = 1
    ds.Manufacturer = "radflow"
    ds.SoftwareVersions = __version__
    ds.ContentDate = facts.report_date
    ds.ContentTime = "000000"
    ds.AcquisitionDateTime = facts.report_date + "000000"
    ds.BurnedInAnnotation = "YES"  # the pseudonym is printed on the pages
    ds.DocumentTitle = f"radflow study report {facts.study_id}"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    # The value must have even length: pad with a NUL, as PS3.3 allows for PDF.
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = name_uid("implementation", __version__)
    ds.file_meta = meta
    return ds


def _empty(keyword: str) -> object:
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import DataElement

    tag = tag_for_keyword(keyword)
    assert tag is not None
    return DataElement(tag, dictionary_VR(tag), None)
