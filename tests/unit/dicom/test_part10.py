"""The fast I/O path writes what the straightforward one wrote, byte for byte.

The reference is radflow's read and write before `radflow.dicom.part10` (commit 83a1cc6):
`pydicom.dcmread(path)`, the same checks, the de-identification, `ds.save_as(buffer,
enforce_file_format=True)`. On every file of pydicom's test and charset corpora and on
scanner-like CT (explicit and implicit VR), the new path must give the same bytes, or the
same quarantine reason, and must really have copied the source's bytes where it could.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import DeflatedExplicitVRLittleEndian

from radflow.dicom.batch import _NATIVE, anonymize_tree, deidentify_chunks, read_dicom
from radflow.dicom.deid import DeidConfig, Deidentifier
from radflow.errors import QuarantineError
from radflow.synth_ct import write_ct_slices

CONFIG = DeidConfig(secret=b"part10-identity-secret-0123456789abcdef")
PYDICOM_DATA = Path(pydicom.__file__).parent / "data"
_UNDEFINED = 0xFFFFFFFF


def _reference_checks(ds: pydicom.Dataset, path: Path) -> str | None:
    """read_dicom's checks as they were (they decode Pixel Data)."""
    for elem in ds.elements():
        if (
            isinstance(elem, RawDataElement)
            and elem.value is not None
            and elem.length != _UNDEFINED
            and len(elem.value) < elem.length
        ):
            return "truncated DICOM file"
    if "PixelData" in ds and ds.file_meta.get("TransferSyntaxUID") in _NATIVE:
        try:
            expected = get_expected_length(ds, "bytes")
        except (AttributeError, KeyError, TypeError, ValueError):
            expected = None
        if isinstance(expected, int) and len(ds.PixelData) < expected:
            return "truncated DICOM file"
    if ds and ds.file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        last = ds.get_item(next(reversed(ds.keys())))
        if (
            isinstance(last, RawDataElement)
            and last.length != _UNDEFINED
            and last.value_tell + last.length < path.stat().st_size
        ):
            return "truncated DICOM file"
    return None


def reference(path: Path, deid: Deidentifier) -> bytes | str:
    """The output (or the quarantine reason) of radflow's I/O before part10."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        return "not a DICOM file"
    except (EOFError, ValueError, OSError, KeyError, TypeError, AttributeError):
        return "unreadable DICOM file"
    if "SOPInstanceUID" not in ds or "StudyInstanceUID" not in ds:
        return "incomplete DICOM file"
    reason = _reference_checks(ds, path)
    if reason is not None:
        return reason
    try:
        deid(ds)
    except QuarantineError as err:
        return err.reason
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def fast(path: Path, deid: Deidentifier) -> tuple[bytes | str, bool]:
    """The new path's output (or reason), and whether it copied slices of the source."""
    try:
        chunks, _ = deidentify_chunks(read_dicom(path), deid)
    except QuarantineError as err:
        return err.reason, False
    copied = any(isinstance(c, memoryview) for c in chunks)
    return b"".join(chunks), copied


def _compare(files: list[Path]) -> tuple[int, int, list[str]]:
    """(files written, of which copied from the source, names that differ)."""
    ref_deid, new_deid = Deidentifier(CONFIG), Deidentifier(CONFIG)
    written = copied = 0
    differ = []
    for path in files:
        expected = reference(path, ref_deid)
        got, was_copied = fast(path, new_deid)
        if got != expected:
            differ.append(path.name)
        if isinstance(got, bytes):
            written += 1
            copied += was_copied
    return written, copied, differ


def test_pydicoms_corpora_come_out_byte_for_byte_as_before() -> None:
    files = sorted(
        p
        for folder in ("test_files", "charset_files")
        for p in (PYDICOM_DATA / folder).rglob("*")
        if p.is_file()
    )
    assert len(files) > 150
    written, copied, differ = _compare(files)
    assert differ == []
    # Most written files really took the copying path (the rest: deflated, big endian,
    # a changed character set...), so the comparison tests it.
    assert written > 80 and copied > 0.8 * written


@pytest.mark.parametrize("implicit_vr", [False, True])
def test_scanner_like_ct_comes_out_byte_for_byte_as_before(
    tmp_path: Path, implicit_vr: bool
) -> None:
    files = write_ct_slices(tmp_path / "ct", 4, per_series=2, implicit_vr=implicit_vr)
    written, copied, differ = _compare(files)
    assert differ == [] and written == copied == 4


def test_a_batch_on_two_processes_writes_the_reference_bytes(tmp_path: Path) -> None:
    files = write_ct_slices(tmp_path / "ct", 12, per_series=6)
    deid = Deidentifier(CONFIG)
    expected = sorted(hashlib.sha256(reference(p, deid)).hexdigest() for p in files)  # type: ignore[arg-type]
    summary = anonymize_tree(tmp_path / "ct", tmp_path / "out", CONFIG, processes=2)
    assert summary.written == 12 and summary.quarantined == []
    outputs = sorted((tmp_path / "out").rglob("*"))
    got = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in outputs if p.is_file())
    assert got == expected


# --------------------------------------------------------------- part10_chunks on its own


def _image(bits: int = 16, private_ob: bytes = b"") -> pydicom.Dataset:
    """A small explicit-VR image with a person name, an OB element, pixels last."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.PatientName = "MÜLLER^JÖRG"
    if private_ob:
        ds.private_block(0x0009, "RADFLOW TEST", create=True).add_new(0x01, "OB", private_ob)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 3, 3, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.PixelData = bytes(range(9 * bits // 8)) + (b"\0" if bits == 8 else b"")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _odd_pixel_data(data: bytes) -> bytes:
    """The file with its 8-bit pixels' pad byte cut: a 9-byte OB value (as some writers do)."""
    assert data[-22:-10] == b"\xe0\x7f\x10\x00OB\x00\x00\x0a\x00\x00\x00"
    return data[:-14] + b"\x09\x00\x00\x00" + data[-10:-1]


def _reserved_bytes_set(data: bytes) -> bytes:
    """The file with the OB element's two reserved bytes not zero (pydicom writes zeros)."""
    at = data.index(b"\x09\x00\x01\x10OB\x00\x00")
    return data[: at + 6] + b"\x12\x34" + data[at + 8 :]


def _charset_changed(ds: pydicom.Dataset) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"  # pydicom then re-encodes every text element


EDGES = {
    "as written by pydicom": (lambda: _bytes(_image(private_ob=b"abcd")), None),
    "odd-length pixel data": (lambda: _odd_pixel_data(_bytes(_image(bits=8))), None),
    "reserved bytes not zero": (
        lambda: _reserved_bytes_set(_bytes(_image(private_ob=b"abcd"))),
        None,
    ),
    "character set changed": (lambda: _bytes(_image()), _charset_changed),
}


@pytest.mark.parametrize("edge", sorted(EDGES))
def test_part10_chunks_are_what_save_as_writes(edge: str) -> None:
    from radflow.dicom.part10 import part10_chunks, read_bytes

    make, change = EDGES[edge]
    data = make()
    expected_ds, got_ds = read_bytes(data), read_bytes(data)
    if change is not None:
        change(expected_ds)
        change(got_ds)
    expected = _bytes(expected_ds)
    chunks = part10_chunks(got_ds)
    assert b"".join(chunks) == expected
    if edge == "as written by pydicom":
        assert expected == data  # nothing changed: every element is the source's bytes
        # Copied: everything from the private block on (the file meta, the character set
        # and the SOP UIDs are decoded by save_as too, and encoded again).
        copied = len(data) - data.index(b"\x09\x00\x10\x00LO")
        assert sum(len(c) for c in chunks if isinstance(c, memoryview)) == copied


def test_encodings_reused_across_files_only_where_the_bytes_are_the_same() -> None:
    """part10 reuses an element's encoding across files (the slices of a series share most
    values); the same value must still encode apart by character set and VR encoding."""
    from pydicom.uid import ImplicitVRLittleEndian

    from radflow.dicom.part10 import part10_chunks, read_bytes

    files = []
    for charset in ("ISO_IR 100", "ISO_IR 192"):
        for implicit in (False, True):
            ds = _image()
            ds.SpecificCharacterSet = charset
            if implicit:
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            files.append(_bytes(ds))
    outputs = set()
    for _ in range(2):  # the second round finds every encoding made in the first
        for data in files:
            expected_ds, got_ds = read_bytes(data), read_bytes(data)
            for one in (expected_ds, got_ds):  # as de-identification sets values
                one.InstitutionName = "MÜNSTER KLINIK"
                one.StudyInstanceUID = "2.25.1234"
            got = b"".join(part10_chunks(got_ds))
            assert got == _bytes(expected_ds)
            outputs.add(got)
    assert len(outputs) == 4
