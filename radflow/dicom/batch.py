"""De-identify a folder tree of DICOM files into `<study>/<series>/<sop>.dcm`, in parallel.

Worker processes each read a file once into memory, de-identify it and write it back with
the elements it left as read copied from the source's bytes (`radflow.dicom.part10`); only
small records come back. Bad input becomes a quarantine record (hashed path, error class,
radflow's own reason: no PHI), never an exception, and the source file is never touched.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from radflow.dicom.deid import DeidConfig, Deidentifier, DeidResult, reid_entry
from radflow.dicom.part10 import PIXEL_DATA, Chunk, part10_chunks, read_bytes, write_chunks
from radflow.errors import QuarantineError
from radflow.lake.records import QuarantineRecord
from radflow.privacy import write_private

STAGE = "anonymize"
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass
class FileOutcome:
    source: str
    output: str | None = None
    part: str | None = None  # the written file, until anonymize_tree moves it to `output`
    bytes_in: int = 0
    # patient id, pseudonym, study uid, pseudonym uid, accession
    mapping: tuple[str, str, str, str, str] | None = None
    quarantine: QuarantineRecord | None = None


@dataclass
class BatchSummary:
    files: int = 0
    written: int = 0
    bytes_in: int = 0
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    mapping: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)

    def line(self) -> str:
        studies = len(self.mapping)
        return (
            f"{self.files} file{'' if self.files == 1 else 's'}: {self.written} de-identified, "
            f"{len(self.quarantined)} quarantined, {studies} stud{'y' if studies == 1 else 'ies'}"
        )


def read_dicom(path: Path) -> pydicom.Dataset:
    """A DICOM Part 10 file, or a QuarantineError saying why it is not one."""
    return read_dicom_bytes(_file_bytes(path))


def _file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise QuarantineError("unreadable DICOM file", type(err).__name__) from None


def read_dicom_bytes(data: bytes) -> pydicom.Dataset:
    """`read_dicom` of a file's bytes: parsed from memory, kept for `deidentify_chunks`."""
    try:
        ds = read_bytes(data)
    except InvalidDicomError:
        raise QuarantineError("not a DICOM file", "no DICM preamble or file meta") from None
    except (EOFError, ValueError, OSError, KeyError, TypeError, AttributeError) as err:
        raise QuarantineError("unreadable DICOM file", type(err).__name__) from None
    if "SOPInstanceUID" not in ds or "StudyInstanceUID" not in ds:
        raise QuarantineError("incomplete DICOM file", "no SOPInstanceUID or StudyInstanceUID")
    truncation = _truncation(ds) or _unparsed_tail(ds, len(data))
    if truncation is not None:
        raise QuarantineError("truncated DICOM file", truncation)
    return ds


def _unparsed_tail(ds: pydicom.Dataset, size: int) -> str | None:
    """Why `ds` looks cut short inside an element's tag, VR or length, or None. pydicom stops
    without an error when fewer than the 8 bytes of an element's header are left, so the
    file then holds bytes after the end of the last element it read."""
    if not ds or ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return None  # positions in an inflated stream are not file offsets
    last = ds.get_item(next(reversed(ds.keys())), keep_deferred=True)
    if not isinstance(last, RawDataElement) or last.length == _UNDEFINED_LENGTH:
        return None
    if last.value_tell + last.length < size:
        return "the file ends inside an element's header"
    return None


_NATIVE = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)


def _truncation(ds: pydicom.Dataset) -> str | None:
    """Why `ds` looks cut short, or None. pydicom reads a file cut inside a value without an
    error (the value just comes back shorter than its declared length), and a file rewritten
    from such a read has native pixel data shorter than Rows x Columns x SamplesPerPixel x
    BitsAllocated x NumberOfFrames. (A file cut inside an undefined-length value reads as an
    empty dataset: "incomplete DICOM file".) Pixel Data is measured without decoding it, so
    that it can be written back as the source's bytes."""
    for elem in ds.values():  # as read: nothing decoded
        if (
            isinstance(elem, RawDataElement)
            and elem.value is not None
            and elem.length != _UNDEFINED_LENGTH
            and len(elem.value) < elem.length
        ):
            return "the file ends inside an element"
    if PIXEL_DATA in ds and ds.file_meta.get("TransferSyntaxUID") in _NATIVE:
        try:
            expected = get_expected_length(ds, "bytes")
        except (AttributeError, KeyError, TypeError, ValueError):
            return None  # an image description too broken to check; deid keeps the bytes as read
        if isinstance(expected, int) and _pixel_bytes(ds) < expected:
            return "pixel data shorter than the image"
    return None


def _pixel_bytes(ds: pydicom.Dataset) -> int:
    """len(ds.PixelData), without decoding it where its value is the bytes as read (OB, OW,
    UN or implicit VR: decoding returns them unchanged)."""
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if (
        isinstance(elem, RawDataElement)
        and elem.value is not None
        and elem.VR in (None, "OB", "OW", "UN", "OB or OW")
    ):
        return len(elem.value)
    return len(ds.PixelData)


def deidentify_chunks(ds: pydicom.Dataset, deid: Deidentifier) -> tuple[list[Chunk], DeidResult]:
    """The de-identified file, as chunks to write in order (slices of the source's bytes
    where elements are as read: `radflow.dicom.part10`), and its identifiers (original ones
    for the map only)."""
    result = deid(ds)
    return part10_chunks(ds), result


def deidentify_bytes(ds: pydicom.Dataset, deid: Deidentifier) -> tuple[bytes, DeidResult]:
    """The de-identified file's bytes, and its identifiers (original ones for the map only)."""
    chunks, result = deidentify_chunks(ds, deid)
    return b"".join(chunks), result


_WORKER: Deidentifier | None = None


_MADE: set[str] = set()  # output folders made by this worker in this batch


def _init(config: DeidConfig) -> None:
    global _WORKER
    _WORKER = Deidentifier(config)
    _MADE.clear()


def _one(args: tuple[str, str, str]) -> FileOutcome:
    source, dst, rel = args
    assert _WORKER is not None
    outcome = FileOutcome(source=rel)
    try:
        data = _file_bytes(Path(source))
        outcome.bytes_in = len(data)
        chunks, ids = deidentify_chunks(read_dicom_bytes(data), _WORKER)
    except QuarantineError as err:
        outcome.quarantine = QuarantineRecord.of_error("", rel, STAGE, err)
        return outcome
    folder = os.path.join(dst, ids.study_uid, ids.series_uid)
    if folder not in _MADE:
        os.makedirs(folder, exist_ok=True)
        _MADE.add(folder)
    name = f"{ids.sop_uid}.dcm"
    # Named after the source too: two sources with one SOP Instance UID must not share a
    # part file; the parent decides which one becomes `out` (see anonymize_tree).
    part = os.path.join(folder, f".{name}.{hashlib.sha256(rel.encode()).hexdigest()[:16]}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        write_chunks(fd, chunks)
    finally:
        os.close(fd)
    outcome.part = part
    outcome.output = f"{ids.study_uid}/{ids.series_uid}/{name}"
    outcome.mapping = (
        ids.original_patient_id,
        ids.patient_id,
        ids.original_study_uid,
        ids.study_uid,
        ids.original_accession,
    )
    return outcome


def walk_files(src: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def anonymize_tree(
    src: Path, dst: Path, config: DeidConfig, processes: int | None = None
) -> BatchSummary:
    """Every file under `src` into `dst`; in `processes` worker processes (default: cores)."""
    files: Sequence[Path] = list(walk_files(src))
    jobs = [(str(f), str(dst), str(f.relative_to(src))) for f in files]
    summary = BatchSummary(files=len(jobs))
    workers = processes or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 8:
        _init(config)
        _collect(map(_one, jobs), dst, summary)
    else:
        chunk = max(1, min(64, len(jobs) // (workers * 4)))
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(config,)) as pool:
            _collect(pool.map(_one, jobs, chunksize=chunk), dst, summary)
    return summary


def _collect(outcomes: Iterator[FileOutcome], dst: Path, summary: BatchSummary) -> None:
    seen: set[str] = set()
    for outcome in outcomes:
        summary.bytes_in += outcome.bytes_in
        if outcome.output is not None and outcome.part is not None:
            # In input order: the first source with a SOP Instance UID wins, a later one is
            # quarantined instead of silently overwriting it.
            if outcome.output in seen:
                os.unlink(outcome.part)
                outcome.quarantine = QuarantineRecord.for_key(
                    "",
                    outcome.source,
                    STAGE,
                    "duplicate SOP instance",
                    "QuarantineError",
                    "a second file of one instance; the first was kept",
                )
            else:
                seen.add(outcome.output)
                os.replace(outcome.part, Path(dst) / outcome.output)
        if outcome.quarantine is not None:
            summary.quarantined.append(outcome.quarantine)
        else:
            summary.written += 1
            pid, pseudo, orig_study, study, accession = outcome.mapping  # type: ignore[misc]
            summary.mapping[(pid, orig_study)] = (pseudo, study, accession)


def write_quarantine(summary: BatchSummary, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for rec in summary.quarantined:
            f.write(rec.model_dump_json() + "\n")


def write_reid_map(summary: BatchSummary, path: Path, secret: bytes) -> None:
    """Original -> pseudonym, for the people allowed to re-identify: mode 600, never in DST."""
    lines = [
        reid_entry(pid, pseudo, orig_study, study, secret, accession) + "\n"
        for (pid, orig_study), (pseudo, study, accession) in sorted(summary.mapping.items())
    ]
    write_private(path, "".join(lines))
