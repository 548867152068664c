"""Quarantine records traced back to the files they name, on the machine that holds them.

A record names its input by a hash (`QuarantineRecord.for_key`): the hash of the inbox's URL
and the file's key for a file fetch refused, of `raw-sha256:<content hash>` for one instance
anonymize refused, and of the stage's input key for a study a stage set aside. None of these
can be read backwards, so this module goes forwards: it hashes every candidate it can see
here (the delivery's listing, the worker's raw cache, the stage addresses of the studies in
it) and matches. What it finds is PHI (paths, keys): it is only ever returned to the command
that prints it, never written to the lake, a log or Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from radflow.lake import Lake
from radflow.lake.records import QuarantineRecord
from radflow.raw_cache import study_indexes
from radflow.store import ObjectStore

if TYPE_CHECKING:
    from radflow.config import Settings


@dataclass(frozen=True)
class Refusal:
    """One quarantine record, and where its input is on this machine ("" when not found)."""

    record_key: str
    record: QuarantineRecord
    location: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "record": self.record_key,
            "stage": self.record.stage,
            "reason": self.record.reason,
            "detail": self.record.detail,
            "error_class": self.record.error_class,
            "location": self.location,
        }


def _folder(keys: Iterable[str]) -> str:
    """The deepest folder holding every key (a study's folder in the delivery)."""
    parts = [PurePosixPath(k).parent.parts for k in keys]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common) + "/"


def _study_inputs(settings: Settings, ref: str, roi_models: Sequence[str]) -> list[str]:
    """The keys a study's stages take as their first input: the quarantine records of that
    study are named by one of them. With the current settings (and each of `roi_models`, the
    segmentation models its ROI may have come from): a study prepared with other settings is
    not found."""
    from radflow.stages import anonymize, features, preprocess

    deid = anonymize.address(settings, ref)
    keys = [ref, deid]
    for roi_model in dict.fromkeys(["", *roi_models]):
        volume = preprocess.address(settings, deid, roi_model)
        keys += [volume, features.address(settings, volume, deid)]
    return keys


def candidates(
    settings: Settings, inbox: ObjectStore | None, prefix: str, roi_models: Sequence[str] = ()
) -> dict[str, str]:
    """Record hash -> the key it names, relative to the delivery's store, for every input this
    machine can see: the delivery's files (when given) and the raw cache's studies. A study
    is named by its folder; with a delivery, only the studies whose files are in it."""
    found: dict[str, str] = {}
    listed: set[str] | None = None
    if inbox is not None:
        listed = set()
        for info in inbox.list(prefix):
            listed.add(info.key)
            found[QuarantineRecord.input_hash(inbox.url, info.key)] = info.key
    for ref, files in study_indexes(settings.cache_dir):
        dicom = [f for f in files if f.kind == "dicom"]
        if listed is not None and not any(f.key in listed for f in dicom):
            continue
        for raw in dicom:
            found[QuarantineRecord.input_hash("", f"raw-sha256:{raw.sha256}")] = raw.key
        folder = _folder(f.key for f in dicom) if dicom else ""
        for key in _study_inputs(settings, ref, roi_models):
            found[QuarantineRecord.input_hash("", key)] = folder
    return found


def refusals(
    lake: Lake,
    settings: Settings,
    inbox: ObjectStore | None = None,
    prefix: str = "",
    where: str = "",
) -> list[Refusal]:
    """Every quarantine record, each with its input's location (`where` + the key) when it is
    found here. With a delivery (`inbox`, `prefix`), only the records of its inputs."""
    found = candidates(settings, inbox, prefix, lake.segmentation_models())
    out = []
    for key, record in lake.quarantine_records():
        name = found.get(record.source_hash)
        if name is None and inbox is not None:
            continue
        out.append(Refusal(key, record, f"{where}{name}" if name is not None else ""))
    return out
