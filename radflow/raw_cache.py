"""The worker's raw cache: local copies of inbox files, and which files make each study.

It holds raw files and raw keys (PHI), so it stays on the worker, never in the lake. Fetch
fills it; anonymize reads a study's files back from it by the study's reference (a hash of
the files' contents), so the two stages share the cache and nothing else. A study's label
map from `ingest --masks` is one of its files (with the label chosen from it), so the
reference, and every address after it, changes when the map or the label does.

Only its owner may read it: its folders are mode 700 and its files (raw copies, label maps,
the group index, which names original keys) mode 600, like the re-identification map.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from radflow.keys import sha256_bytes, sha256_file
from radflow.privacy import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, private_dir, write_private
from radflow.store import ObjectInfo, ObjectStore


@dataclass(frozen=True)
class RawFile:
    key: str
    sha256: str
    path: str
    kind: Literal["dicom", "labelmap"] = "dicom"
    label: int | None = None  # a label map's chosen label; None: the map as it is

    @classmethod
    def of(cls, key: str, path: Path) -> RawFile:
        return cls(key, sha256_file(path), str(path))

    @property
    def identity(self) -> str:
        """What the study's reference hashes: a DICOM file's content (as ever), a label
        map's content and its label."""
        if self.kind == "dicom":
            return self.sha256
        return f"{self.sha256} {self.kind} {'' if self.label is None else self.label}"


def private_folder(cache_dir: Path, *parts: str) -> Path:
    """`cache_dir/<parts>`, every folder from the cache's root down mode 700.

    The root is made private when radflow creates it; one that exists is left as it is
    (it may be a folder the user shares, such as /tmp), and radflow's own folders in it
    are tightened even if they existed loose."""
    if not cache_dir.is_dir():
        cache_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(cache_dir, PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask
    folder = cache_dir
    for part in parts:
        folder = private_dir(folder / part)
    return folder


def _private_file(path: Path) -> Path:
    os.chmod(path, PRIVATE_FILE_MODE)
    return path


def cached_copy(source: ObjectStore, info: ObjectInfo, cache_dir: Path) -> Path:
    """The file in the local cache (mode 600), downloaded once per (source, key, etag)."""
    name = sha256_bytes(f"{source.url}\0{info.key}\0{info.etag}".encode())
    # The download's partial file is created beside `dest`: in a folder no one else can open.
    dest = private_folder(cache_dir, "raw", name[:2]) / name
    if not dest.exists() or dest.stat().st_size != info.size:
        source.download(info.key, dest)
        if dest.stat().st_size != info.size:
            dest.unlink()
            raise OSError("downloaded size differs from the listed size")
    return _private_file(dest)


_LABELMAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


def cached_annotation(
    cache_dir: Path, source: Path, kind: Literal["dicom", "labelmap"], label: int | None = None
) -> RawFile:
    """A copy of a local annotation file (`ingest --masks`) in the cache, as a study file.

    A label map's copy keeps its format's suffix (ITK reads by it); a detached NRRD header
    (.nhdr, its voxels in another file) is read with SimpleITK and kept as one .nrrd file."""
    name = source.name.lower()
    suffix = (
        ".dcm"
        if kind == "dicom"
        else next((s for s in _LABELMAP_SUFFIXES if name.endswith(s)), ".nrrd")
    )
    staging = private_folder(cache_dir, "masks", "incoming")
    tmp = staging / f"{sha256_bytes(str(source).encode())}{suffix}"
    if kind == "labelmap" and not name.endswith(_LABELMAP_SUFFIXES):
        import SimpleITK as sitk

        sitk.WriteImage(sitk.ReadImage(str(source)), str(tmp))
    else:
        shutil.copyfile(source, tmp)
    _private_file(tmp)
    digest = sha256_file(tmp)
    dest = private_folder(cache_dir, "masks", digest[:2]) / f"{digest}{suffix}"
    tmp.replace(dest)
    return RawFile(str(source), digest, str(dest), kind=kind, label=label)


def _index_path(cache_dir: Path, ref: str) -> Path:
    return cache_dir / "groups" / f"{ref}.json"


def index_study(cache_dir: Path, files: list[RawFile]) -> str:
    """Record which cached files make one study; returns the study's reference."""
    files = sorted(files, key=lambda f: f.identity)
    ref = "raw-" + sha256_bytes("\n".join(f.identity for f in files).encode())
    private_folder(cache_dir, "groups")
    write_private(_index_path(cache_dir, ref), json.dumps([asdict(f) for f in files]))
    return ref


def _entries(cache_dir: Path, ref: str) -> list[RawFile]:
    return [RawFile(**e) for e in json.loads(_index_path(cache_dir, ref).read_text())]


def study_indexes(cache_dir: Path) -> Iterator[tuple[str, list[RawFile]]]:
    """Every study the cache holds: its reference and its files (keys and content hashes)."""
    for index in sorted((cache_dir / "groups").glob("raw-*.json")):
        ref = index.name.removesuffix(".json")
        yield ref, _entries(cache_dir, ref)


def has_study(cache_dir: Path, ref: str) -> bool:
    """Whether the cache still holds a study's index and every file it names."""
    if not _index_path(cache_dir, ref).exists():
        return False
    return all(Path(f.path).exists() for f in _entries(cache_dir, ref))


def study_files(cache_dir: Path, ref: str) -> list[Path]:
    """The cached DICOM files of a study, by its reference."""
    return [Path(f.path) for f in _entries(cache_dir, ref) if f.kind == "dicom"]


def study_labelmap(cache_dir: Path, ref: str) -> tuple[Path, int | None] | None:
    """The cached label map of a study and its chosen label, or None if it has none."""
    maps = [f for f in _entries(cache_dir, ref) if f.kind == "labelmap"]
    return (Path(maps[0].path), maps[0].label) if maps else None
