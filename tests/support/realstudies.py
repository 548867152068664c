"""Tiny hospital-style studies made from real files nobody here wrote.

Each builder copies pydicom's, pydicom-data's or nibabel's files into a study folder,
changing only what a scanner would (series and instance UIDs, positions, ImageType,
orientation, the study they belong to), so the pixels and the rest of the headers stay real.
"""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path

import nibabel as nib
import pydicom
import pydicom.data
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from support.realdata import pydicom_file

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
DICOMDIR_TESTS = PYDICOM_FILES / "dicomdirtests"
NIBABEL_DICOM = Path(nib.__file__).parent / "nicom" / "tests" / "data"

# Coronal: rows along the patient's left (x), columns towards the feet (-z); normal along y.
CORONAL = [1, 0, 0, 0, 0, -1]


def uid(name: str) -> str:
    """A deterministic UID per name, so reruns write the same files."""
    return generate_uid(entropy_srcs=["radflow-realstudies", name])


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()  # rtstruct.dcm ships without file meta: give it one
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _into_study(ds: Dataset, study: str, patient: str = "REAL^PATIENT") -> None:
    ds.StudyInstanceUID = uid(f"study {study}")
    ds.PatientID = patient.replace("^", "-")
    ds.PatientName = patient


def ct_series(
    folder: Path,
    study: str,
    name: str,
    slices: int,
    *,
    spacing_mm: float = 5.0,
    number: int = 2,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    orientation: list[float] | None = None,
    source_file: str = "CT_small.dcm",
) -> list[Path]:
    """`slices` copies of pydicom's CT_small (a real 128 x 128 CT slice; or `source_file`,
    MR_small say) stacked along the slice normal `spacing_mm` apart, as one series of
    `study`."""
    source = pydicom.dcmread(pydicom_file(source_file))
    series = uid(f"series {study} {name}")
    x, y, z = (float(v) for v in source.ImagePositionPatient)
    paths = []
    for k in range(slices):
        ds = copy.deepcopy(source)
        _into_study(ds, study)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = uid(f"{study} {name} {k}")
        ds.SeriesNumber = number
        ds.InstanceNumber = k + 1
        ds.ImageType = list(image_type)
        ds.SliceThickness = ds.SpacingBetweenSlices = spacing_mm
        ds.SliceLocation = z + k * spacing_mm
        if orientation is None:
            ds.ImagePositionPatient = [x, y, z + k * spacing_mm]
        else:
            ds.ImageOrientationPatient = orientation
            ds.ImagePositionPatient = [x, y + k * spacing_mm, z]  # coronal: step along y
        paths.append(_save(ds, folder / name / f"{k:03d}.dcm"))
    return paths


def topogram(folder: Path, study: str, number: int = 1) -> Path:
    """A one-image topogram: CT_small with ImageType ORIGINAL\\PRIMARY\\LOCALIZER."""
    (path,) = ct_series(
        folder, study, "topogram", 1, number=number, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")
    )
    return path


def real_object(folder: Path, study: str, name: str, number: int = 300) -> Path:
    """A real non-image object (pydicom's `rtstruct.dcm`, `test-SR.dcm`, `reportsi.dcm`,
    `rtdose.dcm`, `SC_rgb_rle.dcm`, pydicom-data's `liver.dcm` SEG ...) moved into `study`.
    A secondary capture says it has no burned-in text (else de-identification sets it
    aside, as it should)."""
    ds = pydicom.dcmread(pydicom_file(name), force=True)
    _into_study(ds, study)
    if "Secondary Capture" in ds.SOPClassUID.name:
        ds.BurnedInAnnotation = "NO"
    ds.SeriesInstanceUID = uid(f"series {study} {name}")
    ds.SOPInstanceUID = uid(f"{study} {name}")
    ds.SeriesNumber = number
    return _save(ds, folder / name.removesuffix(".dcm") / "0.dcm")


def real_file(folder: Path, study: str, name: str) -> Path:
    """One real file (CT_small, MR_small, eCT_Supplemental, emri_small ...) as a study."""
    ds = pydicom.dcmread(pydicom_file(name))
    _into_study(ds, study)
    return _save(ds, folder / name.removesuffix(".dcm") / "0.dcm")


def copy_tree(source: Path, folder: Path) -> list[Path]:
    """Copy a folder of real files as they are (dicomdirtests' studies, nibabel's MOSAIC)."""
    shutil.copytree(source, folder, dirs_exist_ok=True)
    return sorted(p for p in folder.rglob("*") if p.is_file())


def mosaic(folder: Path) -> list[Path]:
    """nibabel's two Siemens MOSAIC DWI files (one series)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(NIBABEL_DICOM / n, folder / n)) for n in ("0.dcm", "1.dcm")]


def text_pdf(*lines: str) -> bytes:
    """A one-page PDF of `lines`, drawn as radflow draws its study report: text pypdf reads."""
    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"CreationDate": None}) as pdf:
        fig = Figure(figsize=(8.27, 11.69))
        for row, line in enumerate(lines):
            fig.text(0.1, 0.9 - 0.04 * row, line, fontsize=11)
        pdf.savefig(fig)
    return buffer.getvalue()


def encapsulated_pdf(folder: Path, study: str, number: int = 400) -> Path:
    """An Encapsulated PDF in `study` (pydicom ships none): a document, not an image; a
    page of text without identifiers, so `deid.documents = check_text` keeps it."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = uid(f"{study} pdf")
    ds.SeriesInstanceUID = uid(f"series {study} pdf")
    ds.Modality = "DOC"
    ds.SeriesNumber = number
    ds.BurnedInAnnotation = "NO"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document = text_pdf("Radiology report", "No focal lesion.")
    ds.EncapsulatedDocument = document + b"\0" * (len(document) % 2)
    ds.EncapsulatedDocumentLength = len(document)
    _into_study(ds, study)
    return _save(ds, folder / "pdf" / "0.dcm")
