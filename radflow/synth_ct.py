"""Scanner-like CT slices: the corpus for de-identification's speed and byte-identity checks.

`radflow.synth` writes studies for the pipeline with a short header of radflow's own; what
de-identification reads and writes at scale is a scanner's slice: a long header with many
private elements, 512x512 pixels that compress about 2:1, padding after the pixels. These
slices take their header from a real scanner's CT image (pydicom's bundled `CT_small.dcm`, a
GE HiSpeed CT/i slice: 258 elements, 179 of them private, and Data Set Trailing Padding after
Pixel Data), give each series its own patient (PHI in names, IDs, free text and folder names),
and carry int16 pixels with CT noise: a body, two lungs, air, and padding outside the field of
view. Everything is a pure function of the arguments (name-based UIDs, seeded noise).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

TEMPLATE = "CT_small.dcm"
_NAMESPACE = uuid.UUID("5d1c7c3e-7a51-4c1e-9d0b-0c7f3b7e2a11")
_PATIENTS = ("DOE^JANE", "SMITH^JOHN", "GARCIA^MARIA", "NGUYEN^LAN", "MUELLER^PETRA")
PIXEL_SPACING_MM = 0.7
SLICE_MM = 1.25
_PADDING = -2000  # the template's Pixel Padding Value


def _uid(*parts: object) -> str:
    return "2.25." + str(uuid.uuid5(_NAMESPACE, "/".join(map(str, parts))).int)


def _anatomy(size: int) -> npt.NDArray[np.float32]:
    """HU of one axial chest slice without noise: air, a body ellipse, two lungs, padding
    outside the reconstruction circle."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size / 2) - 1
    hu = np.full((size, size), -1000.0, np.float32)
    hu[(x / 0.85) ** 2 + (y / 0.6) ** 2 < 1] = 40.0
    for cx in (-0.4, 0.4):
        hu[((x - cx) / 0.3) ** 2 + (y / 0.42) ** 2 < 1] = -850.0
    hu[x**2 + y**2 > 1] = np.nan
    return hu


def _series_header(template: Dataset, series: int, size: int, seed: int) -> tuple[Dataset, str]:
    """The template with series `series`'s patient, study and series; (header, folder)."""
    ds = template.copy()
    name = _PATIENTS[series % len(_PATIENTS)]
    mrn = f"MRN{seed:02d}{series:05d}"
    accession = f"ACC{series:07d}"
    family, given = name.split("^")
    ds.PatientName = name
    ds.PatientID = mrn
    ds.PatientBirthDate = f"19{50 + series % 40:02d}0{1 + series % 9}15"
    ds.AccessionNumber = accession
    ds.StudyDescription = f"CT CHEST for {family} {given} {mrn}"
    ds.SeriesDescription = f"AXIAL {family}"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.ImageComments = f"Routine chest CT of {family} {given}, {mrn}"
    other = Dataset()
    other.PatientID = f"ALT-{mrn}"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.StudyInstanceUID = _uid(seed, series, "study")
    ds.SeriesInstanceUID = _uid(seed, series, "series")
    ds.FrameOfReferenceUID = _uid(seed, series, "frame")
    ds.StudyID = f"{series:04d}"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [f"{PIXEL_SPACING_MM:g}"] * 2
    ds.SliceThickness = ds.SpacingBetweenSlices = f"{SLICE_MM:g}"
    return ds, f"{family}_{given}_{mrn}/{accession}/S1"


def write_ct_slices(
    folder: Path,
    count: int,
    *,
    size: int = 512,
    per_series: int = 250,
    seed: int = 0,
    implicit_vr: bool = False,
) -> list[Path]:
    """Write `count` slices of `size`x`size` under `folder`, `per_series` slices to a series
    (one patient and study each), as `<patient>/<accession>/S1/IM<k>.dcm`; their paths."""
    template = pydicom.dcmread(get_testdata_file(TEMPLATE))
    template.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    )
    anatomy = _anatomy(size)
    outside = np.isnan(anatomy)
    paths: list[Path] = []
    for series in range((count + per_series - 1) // per_series):
        ds, where = _series_header(template, series, size, seed)
        here = folder / where
        here.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, series])
        for k in range(min(per_series, count - len(paths))):
            noise = rng.standard_normal((size, size), dtype=np.float32) * 12.0
            stored = np.rint(np.nan_to_num(anatomy, nan=0.0) + noise + 1024).astype(np.int16)
            stored[outside] = _PADDING
            sop = _uid(seed, series, k)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = k + 1
            z = -k * SLICE_MM
            corner = (1 - size) * PIXEL_SPACING_MM / 2
            ds.ImagePositionPatient = [f"{corner:.4f}", f"{corner:.4f}", f"{z:.4f}"]
            ds.SliceLocation = f"{z:.4f}"
            ds.PixelData = stored.tobytes()
            path = here / f"IM{k + 1:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths
