"""Fetch: list a delivery, copy its files to the worker's cache, group them into studies.

The cache and the group index hold raw files and raw keys (PHI): they stay on the worker.
What leaves this stage are study references: hashes of the study's file contents.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radflow.annotations.kinds import annotation_kind
from radflow.annotations.kinds import read_header as read_annotation_header
from radflow.annotations.masks_csv import MaskEntry
from radflow.errors import QuarantineError, too_many_voxels
from radflow.imaging.nifti import is_nifti
from radflow.keys import keyed_hash, sha256_bytes, sha256_file
from radflow.lake.records import QuarantineRecord
from radflow.limits import DEFAULT_MAX_SERIES_VOXELS
from radflow.raw_cache import RawFile, cached_annotation, cached_copy, index_study
from radflow.store import ObjectStore, validate_key

NAME = "fetch"
_HEADER_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Rows",
    "Columns",
    "NumberOfFrames",
]
_UNDEFINED_LENGTH = 0xFFFFFFFF
_NIFTI_MAGIC = ((344, b"n+1\0"), (4, b"n+2\0"))  # single-file NIfTI-1 and NIfTI-2


@dataclass
class FetchResult:
    studies: list[str] = field(default_factory=list)
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    masks_without_study: int = 0  # rows of the masks CSV whose study is not in the delivery
    masks_of_another_study: int = 0  # SEG/RTSTRUCT rows whose file names another study
    # The keys a fetch record of each accepted file would have: a record there is from an
    # earlier version of the file, and no longer true.
    accepted: list[str] = field(default_factory=list)


def masks_fingerprint(masks: Sequence[MaskEntry], secret: bytes) -> str:
    """Changes when a masks CSV's rows, a mask file's content or a chosen label change.
    Keyed: the rows hold original StudyInstanceUIDs, and the fingerprint is a cache key."""
    rows = "\n".join(f"{e.study_uid},{sha256_file(e.path)},{e.label or ''}" for e in masks)
    return keyed_hash(secret, rows)[:32]


def delivery_fingerprint(
    source: ObjectStore,
    prefix: str,
    cache_dir: Path,
    max_voxels: int = DEFAULT_MAX_SERIES_VOXELS,
) -> str:
    """Changes when any file of the delivery changes, appears or goes (sizes and ETags), or
    when the size limit changes (it decides which files are taken)."""
    listing = [f"{o.key}\0{o.size}\0{o.etag}" for o in source.list(prefix)]
    where = [source.url, prefix, str(cache_dir.resolve()), f"max_voxels={max_voxels}"]
    return sha256_bytes("\n".join([*where, *listing]).encode())


def _ends_inside_an_element(path: Path) -> bool:
    """Whether the file's header stops inside an element's value: pydicom reads such a file
    without an error, the cut value just comes back shorter than its declared length."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # pydicom raises many types on malformed bytes
        return False
    return any(
        isinstance(elem, RawDataElement)
        and elem.value is not None
        and elem.length != _UNDEFINED_LENGTH
        and len(elem.value) < elem.length
        for part in (ds.file_meta, ds)
        for elem in part.elements()
    )


def _looks_like_nifti(path: Path, name: str) -> bool:
    """By the key's name (the cached copy has none), or an uncompressed file's magic."""
    if is_nifti(Path(name)):
        return True
    with open(path, "rb") as f:
        head = f.read(348)
    return any(head[at : at + len(magic)] == magic for at, magic in _NIFTI_MAGIC)


def _declared_voxels(ds: Dataset) -> int:
    """Rows x Columns x NumberOfFrames as the header says; values that cannot be read as
    integers count as 0 here (later stages refuse them, naming the attribute)."""
    try:
        sizes = [int(ds.get(k) or 1) for k in ("Rows", "Columns", "NumberOfFrames")]
    except Exception:  # pydicom raises many types on malformed values
        return 0
    return sizes[0] * sizes[1] * sizes[2]


def read_header(path: Path, name: str = "", max_voxels: int = DEFAULT_MAX_SERIES_VOXELS) -> Dataset:
    """The UIDs and image size of a raw file (`name`: its key), or a QuarantineError saying
    precisely why the inbox cannot take it. Reads the header only: a file that declares more
    than `max_voxels` is refused here, before any stage would allocate its pixels.

    pydicom's messages can quote element values (PHI), so only the error's type is kept."""
    if path.stat().st_size == 0:
        raise QuarantineError("empty file", "zero bytes")
    if _looks_like_nifti(path, name or path.name):
        raise QuarantineError("NIfTI is not ingested", "the inbox takes DICOM files only")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except InvalidDicomError:
        raise QuarantineError("not a DICOM instance", "no DICM prefix or file meta") from None
    except OSError:
        raise
    except Exception as err:  # pydicom raises many types on malformed bytes
        raise QuarantineError("unreadable DICOM file", type(err).__name__) from None
    if not str(ds.get("StudyInstanceUID", "")) or not str(ds.get("SeriesInstanceUID", "")):
        if _ends_inside_an_element(path):
            raise QuarantineError("truncated DICOM file", "the file ends inside its header")
        raise QuarantineError("incomplete DICOM file", "no StudyInstanceUID or SeriesInstanceUID")
    if (voxels := _declared_voxels(ds)) > max_voxels:
        raise too_many_voxels(voxels, max_voxels)
    return ds


def fetch_delivery(
    source: ObjectStore,
    prefix: str,
    cache_dir: Path,
    max_voxels: int = DEFAULT_MAX_SERIES_VOXELS,
    masks: Sequence[MaskEntry] = (),
) -> FetchResult:
    """Every study under `prefix`; files the inbox cannot take become quarantine records
    (radflow's reason, the key's hash), not errors, and the raw files are never changed.
    `masks` (the rows of `ingest --masks`) add each study's annotation to its files."""
    result = FetchResult()
    studies: dict[str, list[RawFile]] = defaultdict(list)
    for info in source.list(prefix):
        try:
            validate_key(info.key)
        except ValueError as err:  # S3 takes any key, `..` included: refused before any I/O
            # validate_key's message names the kind of problem, never the key itself.
            result.quarantined.append(
                QuarantineRecord.for_key(
                    source.url, info.key, NAME, "unsafe object key", detail=str(err)
                )
            )
            continue
        try:
            path = cached_copy(source, info, cache_dir)
            ds = read_header(path, info.key, max_voxels)
        except QuarantineError as err:
            result.quarantined.append(QuarantineRecord.of_error(source.url, info.key, NAME, err))
            continue
        except OSError as err:
            result.quarantined.append(
                QuarantineRecord.for_key(
                    source.url,
                    info.key,
                    NAME,
                    "unreadable file",
                    type(err).__name__,
                    "the file could not be copied or read",
                )
            )
            continue
        studies[str(ds.StudyInstanceUID)].append(RawFile.of(info.key, path))
        result.accepted.append(QuarantineRecord.for_key(source.url, info.key, NAME, "").store_key)
    _add_masks(studies, masks, cache_dir, result)
    result.studies = sorted(index_study(cache_dir, files) for files in studies.values())
    return result


def _add_masks(
    studies: dict[str, list[RawFile]],
    masks: Sequence[MaskEntry],
    cache_dir: Path,
    result: FetchResult,
) -> None:
    """Each masks CSV row's file joins its study's files (a copy in the cache): a label map
    with its label, a SEG or RTSTRUCT as one more DICOM object of the study. Rows of studies
    not in the delivery, and SEG/RTSTRUCT files of another study, are only counted (UIDs
    are PHI)."""
    for entry in masks:
        files = studies.get(entry.study_uid)
        if files is None:
            result.masks_without_study += 1
            continue
        if annotation_kind(entry.path) == "labelmap":
            label = int(entry.label) if entry.label is not None else None
            files.append(cached_annotation(cache_dir, entry.path, "labelmap", label))
            continue
        try:
            ds = read_annotation_header(entry.path)
        except QuarantineError as err:
            source = "mask-sha256:" + sha256_file(entry.path)  # its path may hold PHI
            result.quarantined.append(QuarantineRecord.of_error("", source, NAME, err))
            continue
        if str(ds.get("StudyInstanceUID", "")) != entry.study_uid:
            # Anonymize maps one study's UIDs together; an object of another study would
            # make the de-identified study two.
            result.masks_of_another_study += 1
            continue
        copy = cached_annotation(cache_dir, entry.path, "dicom")
        if all(f.sha256 != copy.sha256 for f in files):  # not when the delivery holds it too
            files.append(copy)
