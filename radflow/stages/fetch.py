"""Fetch: list a delivery, copy its files to the worker's cache, group them into studies.

The cache and the group index hold raw files and raw keys (PHI): they stay on the worker.
What leaves this stage are study references: hashes of the study's file contents.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from radflow.keys import sha256_bytes, sha256_file
from radflow.records import QuarantineRecord
from radflow.store import ObjectInfo, ObjectStore, validate_key

STAGE = "fetch"
_HEADER_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


@dataclass
class FetchResult:
    studies: list[str] = field(default_factory=list)
    quarantined: list[QuarantineRecord] = field(default_factory=list)


@dataclass(frozen=True)
class RawFile:
    key: str
    sha256: str
    path: str


def _cached_copy(source: ObjectStore, info: ObjectInfo, cache_dir: Path) -> Path:
    """The file in the local cache, downloaded once per (source, key, etag)."""
    name = sha256_bytes(f"{source.url}\0{info.key}\0{info.etag}".encode())
    dest = cache_dir / "raw" / name[:2] / name
    if not dest.exists() or dest.stat().st_size != info.size:
        source.download(info.key, dest)
        if dest.stat().st_size != info.size:
            dest.unlink()
            raise OSError("downloaded size differs from the listed size")
    return dest


def delivery_fingerprint(source: ObjectStore, prefix: str, cache_dir: Path) -> str:
    """Changes when any file of the delivery changes, appears or goes (sizes and ETags)."""
    listing = [f"{o.key}\0{o.size}\0{o.etag}" for o in source.list(prefix)]
    return sha256_bytes(
        "\n".join([source.url, prefix, str(cache_dir.resolve()), *listing]).encode()
    )


def group_index_path(cache_dir: Path, ref: str) -> Path:
    return cache_dir / "groups" / f"{ref}.json"


def fetch_delivery(source: ObjectStore, prefix: str, cache_dir: Path) -> FetchResult:
    """Every study under `prefix`; unreadable files become quarantine records, not errors."""
    result = FetchResult()
    studies: dict[str, list[RawFile]] = defaultdict(list)
    for info in source.list(prefix):
        try:
            validate_key(info.key)
        except ValueError:  # S3 takes any key, `..` included: refused before any I/O
            result.quarantined.append(
                QuarantineRecord.for_key(source.url, info.key, STAGE, "unsafe object key")
            )
            continue
        try:
            path = _cached_copy(source, info, cache_dir)
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            study_uid = str(ds.StudyInstanceUID)
            if not study_uid or "SeriesInstanceUID" not in ds:
                raise InvalidDicomError("no StudyInstanceUID or SeriesInstanceUID")
        except (InvalidDicomError, AttributeError, OSError, ValueError, EOFError) as err:
            reason = "unreadable file" if isinstance(err, OSError) else "not a DICOM instance"
            result.quarantined.append(
                QuarantineRecord.for_key(source.url, info.key, STAGE, reason, type(err).__name__)
            )
            continue
        studies[study_uid].append(RawFile(info.key, sha256_file(path), str(path)))
    for files in studies.values():
        files.sort(key=lambda f: f.sha256)
        ref = "raw-" + sha256_bytes("\n".join(f.sha256 for f in files).encode())
        index = group_index_path(cache_dir, ref)
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps([f.__dict__ for f in files]))
        result.studies.append(ref)
    result.studies.sort()
    return result


def study_files(cache_dir: Path, ref: str) -> list[Path]:
    """The cached files of a study (fetch and anonymize share the worker's cache)."""
    entries = json.loads(group_index_path(cache_dir, ref).read_text())
    return [Path(RawFile(**e).path) for e in entries]
