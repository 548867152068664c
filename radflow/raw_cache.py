"""The worker's raw cache: local copies of inbox files, and which files make each study.

It holds raw files and raw keys (PHI), so it stays on the worker, never in the lake. Fetch
fills it; anonymize reads a study's files back from it by the study's reference (a hash of
the files' contents), so the two stages share the cache and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from radflow.keys import sha256_bytes, sha256_file
from radflow.store import ObjectInfo, ObjectStore


@dataclass(frozen=True)
class RawFile:
    key: str
    sha256: str
    path: str

    @classmethod
    def of(cls, key: str, path: Path) -> RawFile:
        return cls(key, sha256_file(path), str(path))


def cached_copy(source: ObjectStore, info: ObjectInfo, cache_dir: Path) -> Path:
    """The file in the local cache, downloaded once per (source, key, etag)."""
    name = sha256_bytes(f"{source.url}\0{info.key}\0{info.etag}".encode())
    dest = cache_dir / "raw" / name[:2] / name
    if not dest.exists() or dest.stat().st_size != info.size:
        source.download(info.key, dest)
        if dest.stat().st_size != info.size:
            dest.unlink()
            raise OSError("downloaded size differs from the listed size")
    return dest


def _index_path(cache_dir: Path, ref: str) -> Path:
    return cache_dir / "groups" / f"{ref}.json"


def index_study(cache_dir: Path, files: list[RawFile]) -> str:
    """Record which cached files make one study; returns the study's reference."""
    files = sorted(files, key=lambda f: f.sha256)
    ref = "raw-" + sha256_bytes("\n".join(f.sha256 for f in files).encode())
    index = _index_path(cache_dir, ref)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps([asdict(f) for f in files]))
    return ref


def study_files(cache_dir: Path, ref: str) -> list[Path]:
    """The cached files of a study, by its reference."""
    entries = json.loads(_index_path(cache_dir, ref).read_text())
    return [Path(RawFile(**e).path) for e in entries]
