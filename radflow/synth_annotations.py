"""The lesion of a synthetic study as the annotations hospitals send: DICOM SEG and RTSTRUCT.

Both reference the primary series' instances by UID (study, series, SOP instances, frame of
reference), so they still resolve after de-identification with a consistent UID map. The mask
they carry on the primary's grid is exactly the lesion the generator painted:
- the SEG is highdicom's, one binary segment, a frame per slice the lesion is on;
- the RTSTRUCT is built with pydicom (highdicom does not write structure sets): one
  CLOSED_PLANAR contour per lesion slice, traced by scikit-image's marching squares at level
  0.5 through the slice's voxel centres. Every lesion voxel centre is then inside its contour
  and every other centre outside, each at least 0.35 voxel from it, so any rasteriser that
  tests voxel centres recovers the mask exactly (the slices are made single simple regions
  first: `radflow.synth_series.tidy_lesion`).
Header values are fixed by the caller (no clock is read), so the bytes repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian
from skimage import measure

from radflow.synth import _ds

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
# PS3.3 C.8.8.5: an RTSTRUCT names its study by the (retired) Detached Study Management class.
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
LESION_LABEL = "Lesion"
# SegmentedPropertyCategory and Type (CID 7150 / 7151): SCT 49755003, SCT 52988006.
LESION_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
LESION_TYPE = codes.SCT.Lesion

# Patient, study and equipment attributes an annotation repeats from its source images.
_COPIED = (
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
    "ReferringPhysicianName", "StudyID", "StudyDescription", "InstitutionName",
    "InstitutionAddress", "StationName",
)  # fmt: skip


@dataclass(frozen=True)
class AnnotationHeader:
    """What the caller decides for an annotation object: its identity, words and times."""

    series_uid: str
    sop_uid: str
    dimension_uid: str  # SEG only: the dimension organization's UID, fixed for repeatable bytes
    series_number: int
    description: str  # SeriesDescription (the synth puts the patient's name in it, as sites do)
    creator: str  # the annotating physician (PN): ContentCreatorName or ROIInterpreter
    date: str  # DA
    time: str  # TM


def write_seg(
    path: Path, sources: Sequence[Dataset], mask: npt.NDArray[np.bool_], head: AnnotationHeader
) -> Path:
    """A binary DICOM SEG of `mask` ((z, y, x), z in the order of `sources`) at `path`."""
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=LESION_LABEL,
        segmented_property_category=LESION_CATEGORY,
        segmented_property_type=LESION_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=head.series_uid,
        series_number=head.series_number,
        sop_instance_uid=head.sop_uid,
        instance_number=1,
        manufacturer="RADFLOW SYNTH",
        manufacturer_model_name="ANNOTATOR-1",
        software_versions="1",
        device_serial_number="SYNTH-SEG",
        content_label="LESION",
        content_description="Lesion outlined by a reader",
        content_creator_name=head.creator,
        series_description=head.description,
        content_date=head.date,
        content_time=head.time,
        series_date=head.date,
        series_time=head.time,
    )
    # highdicom stamps the clock and a fresh dimension UID; fix them so the bytes repeat.
    seg.InstanceCreationDate, seg.InstanceCreationTime = head.date, head.time
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = head.date + head.time
    for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence):
        item.DimensionOrganizationUID = head.dimension_uid
    _own_file_meta(seg)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return path


def write_rtstruct(
    path: Path, sources: Sequence[Dataset], mask: npt.NDArray[np.bool_], head: AnnotationHeader
) -> Path:
    """An RTSTRUCT whose one ROI outlines `mask` ((z, y, x) on `sources`' axial grid)."""
    first = sources[0]
    ds = Dataset()
    for keyword in _COPIED:
        if keyword in first:
            ds[keyword] = first[keyword]
    frame_of_reference = str(first.FrameOfReferenceUID)
    # fmt: off
    ds.update({
        "SOPClassUID": RT_STRUCTURE_SET_STORAGE, "SOPInstanceUID": head.sop_uid,
        "InstanceCreationDate": head.date, "InstanceCreationTime": head.time,
        "Modality": "RTSTRUCT", "SeriesInstanceUID": head.series_uid,
        "SeriesNumber": head.series_number, "SeriesDescription": head.description,
        "SeriesDate": head.date, "SeriesTime": head.time, "OperatorsName": head.creator,
        "Manufacturer": "RADFLOW SYNTH", "ManufacturerModelName": "ANNOTATOR-1",
        "SoftwareVersions": "1", "InstanceNumber": 1, "StructureSetLabel": "LESION",
        "StructureSetName": "LESION", "StructureSetDate": head.date,
        "StructureSetTime": head.time,
    })
    # fmt: on
    ds.ReferencedFrameOfReferenceSequence = [_frame_of_reference(sources)]
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = frame_of_reference
    roi.ROIName = LESION_LABEL
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = [roi]
    outline = Dataset()
    outline.ROIDisplayColor = [255, 0, 0]
    outline.ContourSequence = DicomSequence(_contours(sources, mask))
    outline.ReferencedROINumber = 1
    ds.ROIContourSequence = [outline]
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.ROIObservationLabel = LESION_LABEL
    observation.RTROIInterpretedType = "GTV"
    observation.ROIInterpreter = head.creator
    ds.RTROIObservationsSequence = [observation]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = head.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    _own_file_meta(ds)
    ds.preamble = b"\0" * 128
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _own_file_meta(ds: Dataset) -> None:
    """The synth's implementation name, not the library's: bytes outlive library upgrades."""
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "RADFLOW_SYNTH_1"


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _frame_of_reference(sources: Sequence[Dataset]) -> Dataset:
    """Frame of reference -> study -> series -> every image of it (PS3.3 C.8.8.5)."""
    first = sources[0]
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = [_reference(s) for s in sources]
    study = Dataset()
    study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return frame


def _contours(sources: Sequence[Dataset], mask: npt.NDArray[np.bool_]) -> list[Dataset]:
    """One CLOSED_PLANAR contour per slice of `mask` that holds lesion voxels.

    Assumes the axial orientation the synth writes (rows along +y, columns along +x).
    """
    items: list[Dataset] = []
    for k, plane in enumerate(mask):
        if not plane.any():
            continue
        # Padding keeps every contour closed; level 0.5 runs between lesion and other centres.
        (line,) = measure.find_contours(np.pad(plane, 1).astype(np.float32), 0.5)
        rows, columns = line[:-1, 0] - 1, line[:-1, 1] - 1  # the last point repeats the first
        source = sources[k]
        x0, y0, z = (float(v) for v in source.ImagePositionPatient)
        row_mm, column_mm = (float(v) for v in source.PixelSpacing)
        points = np.stack([x0 + columns * column_mm, y0 + rows * row_mm], axis=1)
        item = Dataset()
        item.ContourImageSequence = [_reference(source)]
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(points)
        item.ContourNumber = len(items) + 1
        item.ContourData = [_ds(v) for x, y in points for v in (x, y, z)]
        items.append(item)
    return items
