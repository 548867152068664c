"""Part 10 files in and out at the speed of copying: read once into memory, write back every
element the de-identification left as read as a slice of the source's own bytes.

`pydicom` writes each element through its general encoder (a buffer per element, the value
copied twice), which costs more than de-identifying a CT slice's header; it has no way to
write "these elements exactly as they were read". Elements still raw (never decoded) are
written by pydicom byte for byte as read when the dataset keeps its encoding and character
set, so a run of such elements that lay side by side in the source is the source's bytes:
`part10_chunks` hands those out as memoryview slices (the pixel data among them) and lets
pydicom encode only the rest (file meta, changed elements), keeping each encoding for the
next file that holds the same value (a series shares its pseudonyms, UIDs and dummies). On
scanner-like CT slices encoding then costs 0.6 ms of CPU instead of 1.0 (bench/RESULTS.md).
The result is byte for byte what `ds.save_as(buffer, enforce_file_format=True)` writes
(tests/unit/dicom/test_part10.py checks it on pydicom's own test files and on scanner-like
CT); anything this cannot prove identical
(deflated or big-endian data, a changed encoding or character set, a header that is not the
one pydicom would write) goes through `save_as` whole.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from copy import copy
from typing import Any, cast

import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

Chunk = bytes | memoryview

PIXEL_DATA = 0x7FE00010
_GROUP_LENGTH = 0x00020000
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PREAMBLE = b"\x00" * 128


def read_bytes(data: bytes) -> Dataset:
    """A Part 10 file from memory: pydicom parses a BytesIO faster than a file (no system
    call per `tell`), and the dataset keeps it (`ds.buffer`) for `part10_chunks`."""
    return pydicom.dcmread(io.BytesIO(data))


def part10_chunks(ds: Dataset) -> list[Chunk]:
    """The bytes `ds.save_as(buffer, enforce_file_format=True)` writes, as chunks to write in
    order; slices of the source file's bytes where elements are as read (see the module)."""
    source = _source(ds)
    if source is None:
        return [_saved(ds)]
    tsyntax: UID = ds.file_meta.TransferSyntaxUID
    encoding = (tsyntax.is_implicit_VR, tsyntax.is_little_endian)
    if ds.original_encoding != encoding or ds.original_character_set != ds._character_set:
        return [_saved(ds)]  # pydicom decodes and re-encodes every element then
    preamble = getattr(ds, "preamble", None) or _PREAMBLE
    if len(preamble) != 128:
        return [_saved(ds)]  # save_as says why
    # As dcmwrite: the file meta from a copy, with the dataset's SOP class and instance. A
    # copy of each element is enough (values are replaced, never changed in place) and
    # costs a quarter of dcmwrite's deepcopy.
    meta = FileMetaDataset({elem.tag: copy(elem) for elem in ds.file_meta.values()})
    meta.set_original_encoding(
        *ds.file_meta.original_encoding, ds.file_meta.original_character_set
    )  # as a deepcopy keeps it: pydicom then writes raw meta elements as read
    for meta_key, ds_key in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        value = ds.get(ds_key, None)
        if meta.get(meta_key, None) is None or (value and value != meta.get(meta_key)):
            setattr(meta, meta_key, value)
    validate_file_meta(meta, enforce_standard=True)
    head = preamble + b"DICM" + _file_meta_bytes(meta)
    _pixel_data_as_dcmwrite(ds, tsyntax)
    return _body(ds, source, head, encoding[0])


def write_chunks(fd: int, chunks: Sequence[Chunk]) -> None:
    """Write every chunk to the open file `fd` (one system call for most files)."""
    pending = [memoryview(c) for c in chunks if len(c)]
    while pending:
        written = os.writev(fd, pending[:1024])  # IOV_MAX on Linux
        while written and pending:
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0] = pending[0][written:]
                written = 0


def _saved(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _source(ds: Dataset) -> memoryview | None:
    """The file's bytes, if `ds` was read by `read_bytes` in an encoding this module copies."""
    buffer = getattr(ds, "buffer", None)
    meta = getattr(ds, "file_meta", None)
    if not isinstance(buffer, io.BytesIO) or meta is None:
        return None
    tsyntax = meta.get("TransferSyntaxUID", None)
    if (
        tsyntax is None
        or tsyntax.is_private
        or not tsyntax.is_transfer_syntax
        or tsyntax == DeflatedExplicitVRLittleEndian
        or not tsyntax.is_little_endian
    ):
        return None
    return buffer.getbuffer()


def _pixel_data_as_dcmwrite(ds: Dataset, tsyntax: UID) -> None:
    """dcmwrite decodes Pixel Data to set its length kind (defined unless compressed). A raw
    native value of even length in OB/OW (or implicit VR) is written the same either way, so
    it stays raw and can be copied; anything else is decoded, as dcmwrite does."""
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if elem is None:
        return
    if (
        isinstance(elem, RawDataElement)
        and not tsyntax.is_compressed
        and elem.value is not None
        and elem.length != _UNDEFINED_LENGTH
        and len(elem.value) == elem.length
        and elem.length % 2 == 0
        and (elem.is_implicit_VR or elem.VR in ("OB", "OW"))
    ):
        return
    ds[PIXEL_DATA].is_undefined_length = tsyntax.is_compressed


# Encoded elements by what their bytes depend on: the slices of a series share most of the
# values de-identification writes (pseudonyms, study and series UIDs, dummies, Rows...), and
# pydicom's encoder costs more per element than the rest of the write. Only VRs whose bytes
# follow from the value alone: not DS/IS (their text keeps the original string), PN (its
# components), FL/FD (0.0 and -0.0 are equal keys), SQ, or anything not a plain value.
_CACHED_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "SL", "SS", "ST", "TM"})
_CACHED_VRS |= frozenset({"UC", "UI", "UL", "UR", "US", "UT"})
_PLAIN = (str, int, bytes)
_ENCODED: dict[tuple[object, ...], bytes] = {}
_ENCODED_MAX = 4096


def _encoding_key(elem: object, charset: object, implicit: bool) -> tuple[object, ...] | None:
    if (
        not isinstance(elem, DataElement)
        or elem.VR not in _CACHED_VRS
        or elem.is_undefined_length
        or elem.tag == PIXEL_DATA
    ):
        return None
    value = elem.value
    if isinstance(value, MultiValue):
        if not all(isinstance(v, _PLAIN) for v in value):
            return None
        value_key: object = tuple((type(v), v) for v in value)
    elif value is None or isinstance(value, _PLAIN):
        value_key = (type(value), value)
    else:
        return None
    charset_key = tuple(charset) if isinstance(charset, MultiValue) else charset
    return (elem.tag, elem.VR, value_key, charset_key, implicit)


def _span(elem: object, source: memoryview, implicit: bool) -> tuple[int, int] | None:
    """Where a raw element lies in `source`, if pydicom would write exactly those bytes."""
    if (
        not isinstance(elem, RawDataElement)
        or elem.value is None
        or elem.length == _UNDEFINED_LENGTH
        or len(elem.value) != elem.length
        or elem.is_implicit_VR != implicit
        or not elem.is_little_endian
    ):
        return None
    tag = elem.tag
    if implicit:
        header = struct.pack("<HHL", tag >> 16, tag & 0xFFFF, elem.length)
    elif not isinstance(elem.VR, str) or len(elem.VR) != 2:
        return None
    elif elem.VR in EXPLICIT_VR_LENGTH_32:
        header = struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, elem.VR.encode(), 0, elem.length)
    else:
        header = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, elem.VR.encode(), elem.length)
    start = elem.value_tell - len(header)
    if start < 0 or source[start : elem.value_tell] != header:
        return None
    return start, elem.value_tell + elem.length


def _file_meta_bytes(meta: FileMetaDataset) -> bytes:
    """What `write_file_meta_info(fp, meta, enforce_standard=True)` writes for a meta that
    `validate_file_meta` has passed: the group length, then the elements in tag order, each
    through the encoding cache (the meta differs from file to file by one UID)."""
    charset_kept = meta.original_character_set == meta._character_set
    if meta.original_encoding != (False, True) or not charset_kept:
        buf = DicomBytesIO()
        write_file_meta_info(buf, meta, enforce_standard=True)
        return cast(bytes, buf.getvalue())
    if "FileMetaInformationGroupLength" not in meta:
        meta.FileMetaInformationGroupLength = 0
    body = _explicit_le()
    charset = meta.get("SpecificCharacterSet", default_encoding)
    for tag in sorted(meta.keys()):
        if tag != _GROUP_LENGTH:
            _encode(body, meta.get_item(tag), charset, False)
    group_length = _explicit_le()
    write_data_element(group_length, meta[_GROUP_LENGTH])
    # write_file_meta_info's arithmetic: all it wrote, less the 12 bytes of a UL length.
    meta.FileMetaInformationGroupLength = group_length.tell() + body.tell() - 12
    group_length = _explicit_le()
    write_data_element(group_length, meta[_GROUP_LENGTH])
    return cast(bytes, group_length.getvalue() + body.getvalue())


def _explicit_le() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = False, True
    return fp


def _encode(
    fp: DicomBytesIO, elem: DataElement | RawDataElement, charset: Any, implicit: bool
) -> None:
    """`write_data_element(fp, elem, charset)`, from the cache where it may be."""
    key = _encoding_key(elem, charset, implicit)
    if key is None:
        write_data_element(fp, elem, charset)
        return
    found = _ENCODED.get(key)
    if found is None:
        one = DicomBytesIO()
        one.is_implicit_VR, one.is_little_endian = implicit, True
        write_data_element(one, elem, charset)
        if len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.clear()
        found = _ENCODED[key] = one.getvalue()
    fp.write(found)


def _body(ds: Dataset, source: memoryview, head: bytes, implicit: bool) -> list[Chunk]:
    """`write_dataset`'s loop (tag order, no group lengths past group 6) with runs of
    copyable elements taken from `source`."""
    chunks: list[Chunk] = [head]
    encoded: DicomBytesIO | None = None  # elements pydicom encodes, since the last run
    run: tuple[int, int] | None = None  # the current run of copyable elements in `source`
    charset = ds.get("SpecificCharacterSet", default_encoding)
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue
        elem = ds.get_item(tag)
        span = _span(elem, source, implicit)
        if span is not None:
            if encoded is not None:
                chunks.append(encoded.getvalue())
                encoded = None
            if run is not None and run[1] == span[0]:
                run = (run[0], span[1])
                continue
            if run is not None:
                chunks.append(source[run[0] : run[1]])
            run = span
            continue
        if run is not None:
            chunks.append(source[run[0] : run[1]])
            run = None
        if encoded is None:
            encoded = DicomBytesIO()
            encoded.is_implicit_VR, encoded.is_little_endian = implicit, True
        _encode(encoded, elem, charset, implicit)
    if encoded is not None:
        chunks.append(encoded.getvalue())
    if run is not None:
        chunks.append(source[run[0] : run[1]])
    return chunks
