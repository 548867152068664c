"""Studies around real annotations: a CT series written on the grid a SEG or RTSTRUCT
names, with the UIDs it references, so the annotation resolves as it would in a delivery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from support.realdata import pydicom_file

Point = tuple[float, float, float]


@dataclass(frozen=True)
class CTSeries:
    folder: Path
    files: tuple[Path, ...]
    study_uid: str
    series_uid: str
    sop_uids: frozenset[str]


def write_ct_series(
    folder: Path,
    *,
    rows: int,
    columns: int,
    pixel_spacing: tuple[float, float],
    positions: Sequence[Point],
    sop_uids: Sequence[str] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_uid: str | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    patient_id: str = "ANNOT-PATIENT-7",
) -> CTSeries:
    """An axial CT series (pixels all -1000 HU) with one file per position."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    sop_uids = list(sop_uids or [generate_uid() for _ in positions])
    thickness = abs(positions[1][2] - positions[0][2]) if len(positions) > 1 else 1.0
    files = []
    for k, (position, sop_uid) in enumerate(zip(positions, sop_uids, strict=True)):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "CT"
        ds.PatientName = "Annot^Patient"
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19610203"
        ds.PatientSex = "F"
        ds.StudyDate = "20240506"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC-ANNOT-1"
        ds.StudyID = "1"
        ds.ReferringPhysicianName = "Referrer^Annot"
        ds.Manufacturer = "radflow tests"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber = 2
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in orientation]
        ds.PixelSpacing = [f"{v:.7g}" for v in pixel_spacing]
        ds.SliceThickness = f"{thickness:.6g}"
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = np.full((rows, columns), 24, np.uint16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        path = folder / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return CTSeries(folder, tuple(files), study_uid, series_uid, frozenset(sop_uids))


def liver_seg() -> Path:
    """pydicom-data's liver.dcm: a real 3-frame binary SEG (dcmqi), one segment 'Liver'."""
    return pydicom_file("liver.dcm")


def liver_ct(folder: Path) -> CTSeries:
    """The CT series liver.dcm annotates, rebuilt from the SEG's own geometry: one slice per
    frame at its Plane Position, with the SOP Instance UID its Source Image Sequence names,
    the series, study and frame of reference it references, 512 x 512 at its pixel spacing."""
    seg = pydicom.dcmread(liver_seg(), stop_before_pixels=True)
    shared = seg.SharedFunctionalGroupsSequence[0]
    spacing = tuple(float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    frames = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        x, y, z = (float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
        sop = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        frames.append(((x, y, z), sop))
    frames.sort(key=lambda f: f[0][2])
    return write_ct_series(
        folder,
        rows=int(seg.Rows),
        columns=int(seg.Columns),
        pixel_spacing=(spacing[0], spacing[1]),
        positions=[f[0] for f in frames],
        sop_uids=[f[1] for f in frames],
        study_uid=str(seg.StudyInstanceUID),
        series_uid=str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
        frame_uid=str(seg.FrameOfReferenceUID),
        orientation=[float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        patient_id=str(seg.PatientID),
    )


def rtstruct_file() -> Path:
    """pydicom's rtstruct.dcm: ROI 1 'patient' as three closed rectangles at z = -200,
    -190, -180 mm (x -200..200, y -150..150), ROIs 2 and 3 as single points."""
    return pydicom_file("rtstruct.dcm")


#: A grid for rtstruct.dcm: 1 mm pixels whose centres sit half-way between whole mm (no
#: centre on a contour edge), slices every 10 mm from -210 to -170 (the contours' planes
#: and one empty slice either side).
RT_ROWS = RT_COLUMNS = 512
RT_ORIGIN_XY = -255.5
RT_SLICES_Z = (-210.0, -200.0, -190.0, -180.0, -170.0)


def rtstruct_ct(folder: Path) -> CTSeries:
    """The CT series rtstruct.dcm references (its RT Referenced Series' UID, its study and
    frame of reference) on the grid above."""
    rt = pydicom.dcmread(rtstruct_file(), force=True)
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    return write_ct_series(
        folder,
        rows=RT_ROWS,
        columns=RT_COLUMNS,
        pixel_spacing=(1.0, 1.0),
        positions=[(RT_ORIGIN_XY, RT_ORIGIN_XY, z) for z in RT_SLICES_Z],
        study_uid=str(rt.StudyInstanceUID),
        series_uid=str(series.SeriesInstanceUID),
        frame_uid=str(frame.FrameOfReferenceUID),
        patient_id=str(rt.PatientID),
    )


def write_seg(
    path: Path,
    ct: CTSeries,
    labels: np.ndarray,
    *,
    kind: str = "BINARY",
    source_files: Sequence[Path] | None = None,
    fractions: np.ndarray | None = None,
) -> Path:
    """A DICOM SEG written with highdicom from a (z, y, x) array of segment numbers (0:
    background) on `ct`'s slices, in file order; one segment per nonzero value, labelled
    "segment <n>", coded as SCT Neoplasm (108369006). `kind`: BINARY, FRACTIONAL or
    LABELMAP (DICOM 2024c, its own SOP class); a FRACTIONAL SEG stores `fractions` (0..1)
    as segment 1's values when given. Empty frames are omitted, as highdicom does by
    default."""
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept

    sources = [pydicom.dcmread(p) for p in (source_files or ct.files)]
    numbers = sorted(int(v) for v in np.unique(labels) if v)
    category = CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"segment {n}",
            segmented_property_category=category,
            segmented_property_type=CodedConcept("108369006", "SCT", "Neoplasm"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, n in enumerate(numbers)
    ]
    stacked = np.stack([labels == n for n in numbers], axis=-1)
    pixels = {
        "BINARY": stacked,
        "FRACTIONAL": (
            stacked.astype(np.float32) if fractions is None else fractions[..., np.newaxis]
        ),
        "LABELMAP": np.searchsorted([0, *numbers], labels).astype(np.uint8),
    }[kind]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues[kind],
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=300,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="radflow tests",
        manufacturer_model_name="support.annotations",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(path)
    return path
