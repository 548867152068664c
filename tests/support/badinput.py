"""A corpus of bad input, written beside good synthetic studies, for the reliability tests.

Every bad input is made from a real slice of a good study (so it carries that study's PHI,
which must not leak into any record) and says which stage should refuse it and why:

- files the inbox cannot take at all (empty, not DICOM, NIfTI, cut before the study's
  UIDs, pixel data declared absurdly large) are refused by fetch, one record per file;
- files cut after their UIDs join the good study they were cut from: anonymize refuses
  the file alone and the study goes on without it;
- headers with wrong VRs or bad values, and inconsistent series, are each a study of their
  own (new UIDs): preprocess refuses the study, one record per study.

The generator is deterministic (UIDs are name-based, nothing reads the clock), so a rerun
writes byte-identical files.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.tag import BaseTag
from pydicom.uid import RLELossless

from radflow.config import Settings
from radflow.keys import sha256_bytes, sha256_file
from radflow.lake.records import QuarantineRecord
from radflow.stages.anonymize import deid_address
from radflow.store import ObjectStore, open_store
from radflow.synth import SynthSpec, SynthStudy, synthesize
from support.phi import phi_strings

# 65535 x 65535 x 16 bits is 8.6 GB a frame: 4 frames declare 34 GB in a file of a few KiB.
ABSURD_ROWS = ABSURD_COLUMNS = 65535
ABSURD_FRAMES = 4


@dataclass(frozen=True)
class BadInput:
    """One bad input: what the records name (`files` for a file, or the study made of them),
    the stage that should set it aside, and radflow's reason."""

    name: str
    files: tuple[Path, ...]
    stage: str
    reason: str

    @property
    def unit(self) -> str:
        return "file" if self.stage in ("fetch", "anonymize") else "study"


def _uid(*parts: object) -> str:
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join(map(str, ('badinput', *parts)))).int}"


def _png(width: int = 8, height: int = 8) -> bytes:
    """A valid grey PNG, written by hand: a picture's bytes under a .dcm name."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    rows = b"".join(b"\0" + bytes(range(width)) for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _offset_of(path: Path, keyword: str) -> int:
    """Where the element `keyword` starts in the file (explicit VR little endian)."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    assert tag is not None
    needle = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    offset = path.read_bytes().find(needle, 132)
    assert offset > 0, keyword
    return offset


def _restudy(ds: Dataset, name: str, k: int) -> None:
    """Make slice k of `ds` part of a new study `name` (same patient, new UIDs)."""
    ds.StudyInstanceUID = _uid(name, "study")
    ds.SeriesInstanceUID = _uid(name, "series")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(name, k)


def _study_copy(
    source: SynthStudy, inbox: Path, name: str, change: Callable[[Dataset, int], None]
) -> tuple[Path, ...]:
    """The first series of `source` as a new study under `inbox/name/`, each slice changed."""
    folder = inbox / name
    folder.mkdir(parents=True)
    files = [f for f in source.files if f.parent.name == "S1"]
    out = []
    for k, f in enumerate(sorted(files)):
        ds = pydicom.dcmread(f)
        _restudy(ds, name, k)
        change(ds, k)
        path = folder / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=False)
        out.append(path)
    return tuple(out)


def _wrong_vr_rows(ds: Dataset, k: int) -> None:
    if k == 3:  # one slice in the series is enough to spoil it
        del ds[0x00280010]
        ds.add_new(0x00280010, "LO", "abc")


def _two_positions(ds: Dataset, k: int) -> None:
    if k == 2:
        ds.ImagePositionPatient = list(ds.ImagePositionPatient)[:2]


def _spacing_abc(ds: Dataset, k: int) -> None:
    if k == 1:
        # Raw: pydicom refuses to build a DS of "abc", but writes the bytes as given.
        ds[0x00280030] = RawDataElement(BaseTag(0x00280030), "DS", 4, b"abc ", 0, False, True)


def _half_size(ds: Dataset, k: int) -> None:
    """Slices 0-2 of the series at half the size (pixel data to match): Rows x Columns differ."""
    if k < 3:
        pixels = ds.pixel_array[::2, ::2].copy()
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()


def _other_spacing(ds: Dataset, k: int) -> None:
    if k >= 8:
        ds.PixelSpacing = ["1.25", "1.25"]


def _turned(ds: Dataset, k: int) -> None:
    if k == 5:
        ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]


def _nifti(path: Path, affine: np.ndarray) -> Path:
    # No affine given to the image: saving would otherwise write it over the header's sform.
    image = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.int16), None)
    image.header.set_sform(affine, code=2)
    image.header.set_qform(np.eye(4), code=0)
    nib.save(image, path)
    return path


def make_corpus(inbox: Path, good: list[SynthStudy]) -> list[BadInput]:
    """Write the bad corpus under `inbox` (beside `good`, already there); what each should give.

    `good` needs at least two studies: bad files join the first, bad studies copy the second.
    """
    host, donor = good[0], good[1]
    host_slices = sorted(f for f in host.files if f.parent.name == "S1")
    slice_bytes = host_slices[0].read_bytes()
    junk = inbox / "junk"
    junk.mkdir(parents=True)
    out: list[BadInput] = []

    def file(name: str, data: bytes, stage: str, reason: str, folder: Path = junk) -> None:
        path = folder / name
        path.write_bytes(data)
        out.append(BadInput(name, (path,), stage, reason))

    file("empty.dcm", b"", "fetch", "empty file")
    file(
        "notes.dcm",
        b"Patient called, will bring the CD next week.\n" * 20,
        "fetch",
        "not a DICOM instance",
    )
    file("picture.dcm", _png(), "fetch", "not a DICOM instance")
    # Cut inside the file meta, and inside the dataset before the study's UIDs.
    file("cut-meta.dcm", slice_bytes[:200], "fetch", "truncated DICOM file")
    cut = _offset_of(host_slices[0], "StudyDescription") + 12
    file("cut-header.dcm", slice_bytes[:cut], "fetch", "truncated DICOM file")
    # After the UIDs (the file still names its study): anonymize sets the file aside alone.
    # Rows is 4 bytes of tag, 2 of VR, 2 of length, then its value: cut in each part.
    for k, (name, into) in enumerate((("cut-element-header.dcm", 5), ("cut-value.dcm", 9))):
        data = host_slices[3 + k].read_bytes()
        at = _offset_of(host_slices[3 + k], "Rows")
        file(name, data[: at + into], "anonymize", "truncated DICOM file", host_slices[0].parent)
    pixels_at = _offset_of(host_slices[2], "PixelData")
    data = host_slices[2].read_bytes()
    file(
        "cut-pixels.dcm",
        data[: pixels_at + 12 + (len(data) - pixels_at - 12) // 2],
        "anonymize",
        "truncated DICOM file",
        host_slices[2].parent,
    )

    # Absurd dimensions: a file of a few KiB whose header declares 34 GB of pixel data.
    ds = pydicom.dcmread(host_slices[0])
    _restudy(ds, "absurd", 0)
    ds.Rows, ds.Columns, ds.NumberOfFrames = ABSURD_ROWS, ABSURD_COLUMNS, ABSURD_FRAMES
    ds.PixelData = bytes(4096)
    absurd = junk / "absurd.dcm"
    ds.save_as(absurd, enforce_file_format=True)
    out.append(BadInput("absurd.dcm", (absurd,), "fetch", "declared pixel data too large"))
    # The same, compressed: nothing looks short, only the declared size gives it away.
    _restudy(ds, "absurd-rle", 0)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([bytes(64)] * ABSURD_FRAMES)
    ds["PixelData"].VR = "OB"
    absurd = junk / "absurd-rle.dcm"
    ds.save_as(absurd, enforce_file_format=True)
    out.append(BadInput("absurd-rle.dcm", (absurd,), "fetch", "declared pixel data too large"))

    for name, affine in (
        ("nan-affine.nii", np.full((4, 4), np.nan)),
        ("singular-affine.nii.gz", np.diag([1.0, 0.0, 1.0, 1.0])),
    ):
        path = _nifti(junk / name, affine)
        out.append(BadInput(name, (path,), "fetch", "NIfTI is not ingested"))

    for name, change, reason in (
        ("wrong-vr-rows", _wrong_vr_rows, "wrong VR"),
        ("position-two-values", _two_positions, "invalid geometry"),
        ("spacing-abc", _spacing_abc, "invalid geometry"),
        ("inconsistent-size", _half_size, "inconsistent series"),
        ("inconsistent-spacing", _other_spacing, "inconsistent series"),
        ("inconsistent-orientation", _turned, "inconsistent series"),
    ):
        out.append(BadInput(name, _study_copy(donor, inbox, name, change), "preprocess", reason))
    return out


# ------------------------------------------------------- checking a lake against the table

GOOD = SynthSpec(studies=3, rows=32, columns=32, slices=12, seed=5)


def corpus(root: Path) -> tuple[Path, list[SynthStudy], list[BadInput]]:
    folder = root / "inbox"
    good = synthesize(folder, root / "labels.csv", GOOD)
    return folder, good, make_corpus(folder, good)


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def expected_records(
    bad: list[BadInput], folder: Path, lake: ObjectStore, settings: Settings
) -> dict[str, str]:
    """Record key -> reason, one per bad input, keyed as each stage names its input: fetch by
    the raw key, anonymize by the file's content hash, preprocess by the de-identified study."""
    source = open_store(folder.resolve().as_uri()).url
    expected: dict[str, str] = {}
    for item in bad:
        if item.stage == "fetch":
            (path,) = item.files
            rec = QuarantineRecord.for_key(source, path.relative_to(folder).as_posix(), "fetch", "")
        elif item.stage == "anonymize":
            (path,) = item.files
            rec = QuarantineRecord.for_key("", "raw-sha256:" + sha256_file(path), "anonymize", "")
        else:
            hashes = "\n".join(sorted(sha256_file(f) for f in item.files))
            deid = deid_address("raw-" + sha256_bytes(hashes.encode()), settings.deid_config())
            rec = QuarantineRecord.for_key("", deid, item.stage, "")
        assert rec.store_key not in expected, item.name
        expected[rec.store_key] = item.reason
    return expected


def records(lake_root: Path) -> dict[str, str]:
    return {
        p.relative_to(lake_root).as_posix(): json.loads(p.read_text())["reason"]
        for p in sorted((lake_root / "quarantine").rglob("*.json"))
    }


def assert_no_phi(lake_root: Path, good: list[SynthStudy]) -> None:
    phi = phi_strings(good)
    for path in (lake_root / "quarantine").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not [s for s in phi if s in text], path.name
