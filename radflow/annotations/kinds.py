"""What kind of annotation a file is, decided by its content (magic bytes, SOP class)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radflow.errors import QuarantineError

Kind = Literal["seg", "rtstruct", "labelmap"]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
# DICOM 2024c's LABELMAP segmentations have a SOP class of their own.
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEGMENTATION_CLASSES = frozenset({SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE})
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_DICOM_KINDS: dict[str, Kind] = {
    SEGMENTATION_STORAGE: "seg",
    LABEL_MAP_SEGMENTATION_STORAGE: "seg",
    RT_STRUCTURE_SET_STORAGE: "rtstruct",
}
# NIfTI-1 / NIfTI-2 carry their magic at byte 344 / 4 of the header; NRRD (.nrrd and the
# detached .nhdr) starts with "NRRD000<version>".
_NIFTI1 = (344, (b"n+1\0", b"ni1\0"))
_NIFTI2 = (4, (b"n+2\0", b"ni2\0"))
_GZIP = b"\x1f\x8b"
_HEADER_BYTES = 540
# What pydicom raises on a file it cannot parse or decode (values are decoded lazily).
READ_ERRORS = (
    EOFError,
    ValueError,
    OSError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    NotImplementedError,
)


def annotation_kind(path: Path) -> Kind | None:
    """ "seg", "rtstruct" or "labelmap" by content, or None for anything else (an image
    series' file, a report, a file that is not there)."""
    try:
        head = _head(path)
    except OSError:
        return None
    if _is_labelmap_header(head):
        return "labelmap"
    try:
        ds = read_header(path)
    except QuarantineError:
        return None
    return _DICOM_KINDS.get(str(ds.get("SOPClassUID", "")))


def read_header(path: Path, *, whole: bool = False) -> Dataset:
    """A DICOM file's dataset (without pixels unless `whole`), or a QuarantineError.

    Files without the Part 10 preamble (pydicom's own rtstruct.dcm is one) are read with
    `force=True`, and then must at least carry a SOP Class UID."""
    for force in (False, True):
        try:
            ds = pydicom.dcmread(path, force=force, stop_before_pixels=not whole)
            sop_class = str(ds.get("SOPClassUID", ""))
        except InvalidDicomError:
            continue
        except READ_ERRORS as err:
            raise QuarantineError("unreadable annotation", type(err).__name__) from None
        if sop_class:
            return ds
        break
    raise QuarantineError("not an annotation", "neither DICOM SEG, RTSTRUCT nor a label map")


def not_an_annotation(path: Path) -> QuarantineError:
    """Why `path` (for which `annotation_kind` said None) is no annotation, as precisely as
    can be said without PHI: unreadable, or a DICOM object of another SOP class (named)."""
    if not path.is_file():
        return QuarantineError("annotation file missing", "no file at the given path")
    try:
        ds = read_header(path)
    except QuarantineError as err:
        return err
    sop_class = ds.SOPClassUID
    name = sop_class.name if sop_class.is_valid and sop_class.name != sop_class else "unknown"
    return QuarantineError(
        "not an annotation", f"a DICOM object of another SOP class ({name}), not SEG or RTSTRUCT"
    )


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        head = f.read(_HEADER_BYTES)
    if head.startswith(_GZIP):
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(_HEADER_BYTES)
        except (OSError, EOFError):
            return b""
    return head


def _is_labelmap_header(head: bytes) -> bool:
    if head.startswith(b"NRRD000"):
        return True
    return any(head[offset : offset + 4] in magics for offset, magics in (_NIFTI1, _NIFTI2))
