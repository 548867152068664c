"""De-identification as a specification: what PS3.15 Annex E and radflow promise, checked on
a PHI-injected corpus built from every file pydicom ships, on small synthetic datasets for each
profile option, and by properties of the keyed pseudonym and date-shift functions.

The corpus: every file under pydicom's `data/test_files` and `data/charset_files` that
`dcmread` accepts gets unique, searchable PHI tokens (``PHI<KIND><NNN>Q``) in identifying
attributes, free text, nested and private sequences, private elements and an overlay comment,
keeps its SOP class and transfer syntax, and is written back as a Part 10 file. One
`anonymize_tree` run (two worker processes) over it is shared by the corpus tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    UID_dictionary,
)

from radflow.dicom.batch import (
    BatchSummary,
    anonymize_tree,
    read_dicom,
    write_quarantine,
    write_reid_map,
)
from radflow.dicom.deid import (
    _DUMMY,
    DeidConfig,
    Deidentifier,
    date_shift_days,
    method_text,
    patient_pseudonym,
    pseudo_uid,
    shift_date,
    shift_datetime,
)
from radflow.dicom.profile import Option, Profile, method_codes
from radflow.errors import QuarantineError
from radflow.keys import sha256_bytes

# pydicom's own test files hold values invalid for their VR (on purpose); reading them warns.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")

SECRET = b"deid-suite-secret-5f0c2a9e1b7d4c36a8e2f1d09b3c7a6e"
CONFIG = DeidConfig(secret=SECRET)
PYDICOM_DATA = Path(pydicom.__file__).parent / "data"
SOURCE_DIRS = ("test_files", "charset_files")
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")
TOKEN_RE = re.compile(rb"PHI[A-Z]+[0-9]{3}Q", re.IGNORECASE)
PRIVATE_CREATOR = "PHI CREATOR"
PRIVATE_GROUP = 0x0099
# Every reason radflow's de-identification and batch code quarantine an input with.
QUARANTINE_REASONS = frozenset(
    {
        "not a DICOM file",
        "unreadable DICOM file",
        "incomplete DICOM file",
        "truncated DICOM file",
        "duplicate SOP instance",
        "burned-in annotation",
        "possible burned-in annotation",
    }
)
# Secondary capture / ultrasound files left without BurnedInAnnotation (quarantined as
# possibly burned in) and the one file marked BurnedInAnnotation YES; every other corpus file
# says NO, so the burned-in rule does not swallow the corpus.
LEFT_AS_IS = frozenset({"SC_rgb_small_odd.dcm", "examples_palette.dcm", "JPEG2000.dcm"})
MARKED_BURNED_IN = "SC_rgb_jpeg_dcmtk.dcm"
# pydicom ships many files that share one SOP Instance UID (variants of one image); in the
# corpus each later one gets a fresh UID, except this family, kept to test duplicates.
DUPLICATES_KEPT = "MR_small"
# The identifiers radflow replaces by pseudonyms rather than by the table's Z.
PSEUDONYMISED = frozenset({0x00100010, 0x00100020})
# Elements radflow writes itself after applying the table.
WRITTEN_BY_RADFLOW = frozenset(
    {
        0x00120062,  # PatientIdentityRemoved
        0x00120063,  # DeidentificationMethod
        0x00120064,  # DeidentificationMethodCodeSequence
        0x00280303,  # LongitudinalTemporalInformationModified
    }
)
IMPLEMENTATION_CLASS_UID = 0x00020012
INSTANCE_UID_KEYWORDS = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)


def _token(kind: str, index: int) -> str:
    return f"PHI{kind}{index:03d}Q"


# --------------------------------------------------------------------------- the corpus


@dataclass
class Source:
    """One injected corpus file: where it lies and what was put into it."""

    rel: str
    name: str
    tokens: dict[str, str]  # kind -> token
    uids: dict[str, str]  # keyword -> the input's instance UIDs
    birth_date: str
    sop_class: str  # as pydicom ships the file
    syntax: str


@dataclass
class Corpus:
    root: Path
    sources: list[Source]
    unreadable: list[str] = field(default_factory=list)  # dcmread(force=False) refused them
    unwritable: list[str] = field(default_factory=list)  # read, but not writable back

    def source_for(self, record_hash: str) -> Source:
        return {_source_hash(s.rel): s for s in self.sources}[record_hash]


def _source_hash(rel: str) -> str:
    """The hash anonymize_tree's quarantine records name a file by."""
    return sha256_bytes(f"/{rel}".encode())


def _inject(ds: Dataset, index: int, referenced_sop: str | None) -> dict[str, str]:
    """Put PHI tokens into `ds`; returns every token put in, by kind."""
    tok = {
        kind: _token(kind, index)
        for kind in (
            "NAME",
            "GIVEN",
            "PID",
            "OPID",
            "ACC",
            "INST",
            "REF",
            "STUDY",
            "SERIES",
            "COMMENT",
            "RAACC",
            "RPD",
            "RSQ",
            "SQACC",
            "DEEPOP",
            "DEEPCC",
            "PRIV",
            "PRIVB",
            "PRIVSQ",
            "OVL",
        )
    }
    name, pid = tok["NAME"], tok["PID"]
    ds.PatientName = f"{name}^{tok['GIVEN']}"
    ds.PatientID = pid
    ds.OtherPatientIDs = [tok["OPID"], f"{pid}-ALT"]
    ds.AccessionNumber = tok["ACC"]
    ds.InstitutionName = f"{tok['INST']} Hospital"
    ds.ReferringPhysicianName = f"{tok['REF']}^Doctor"
    ds.StudyDescription = f"{tok['STUDY']} for {name} id {pid}"
    ds.SeriesDescription = f"{tok['SERIES']} {name} {pid}"
    ds.ImageComments = f"{tok['COMMENT']}: patient {name} ({pid}) seen"
    ds.PatientBirthDate = f"{1940 + index % 50}{1 + index % 12:02d}{1 + index % 28:02d}"

    request = Dataset()
    request.AccessionNumber = tok["RAACC"]
    request.RequestedProcedureDescription = tok["RPD"]
    ds.RequestAttributesSequence = Sequence([request])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = str(ds.get("StudyInstanceUID", "1.2.3.4"))
    study_ref.RequestedProcedureDescription = tok["RSQ"]
    ds.ReferencedStudySequence = Sequence([study_ref])

    # Two levels deep, in a sequence the profile keeps (its UIDs replaced): the item
    # references another corpus file, and its nested item names people.
    purpose = Dataset()
    purpose.CodeValue = "121320"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Uncompressed predecessor"
    purpose.OperatorsName = tok["DEEPOP"]
    purpose.ContentCreatorName = tok["DEEPCC"]
    source_ref = Dataset()
    source_ref.ReferencedSOPClassUID = str(ds.get("SOPClassUID", CTImageStorage))
    source_ref.ReferencedSOPInstanceUID = referenced_sop or str(ds.get("SOPInstanceUID", "1.2.3"))
    source_ref.AccessionNumber = tok["SQACC"]
    source_ref.PurposeOfReferenceCodeSequence = Sequence([purpose])
    if "SourceImageSequence" in ds:
        ds.SourceImageSequence.append(source_ref)
    else:
        ds.SourceImageSequence = Sequence([source_ref])

    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", tok["PRIV"])
    block.add_new(0x11, "LO", f"private note on {name}")
    inner = Dataset()
    inner.PatientComments = tok["PRIVSQ"]
    inner.add_new(0x00991010, "LO", tok["PRIVB"])
    inner.add_new(0x00990010, "LO", PRIVATE_CREATOR)
    block.add_new(0x12, "SQ", Sequence([inner]))
    ds.add_new(0x60004000, "LT", tok["OVL"])
    return tok


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _build_corpus(root: Path) -> Corpus:
    corpus = Corpus(root=root, sources=[])
    previous_sop: str | None = None
    sops: set[str] = set()
    for sub in SOURCE_DIRS:
        for path in sorted((PYDICOM_DATA / sub).rglob("*")):
            if not path.is_file():
                continue
            rel = f"{sub}/{path.relative_to(PYDICOM_DATA / sub).as_posix()}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ds = pydicom.dcmread(path, force=False)
                except Exception:
                    corpus.unreadable.append(rel)
                    continue
                index = len(corpus.sources) + len(corpus.unwritable)
                sop = str(ds.get("SOPInstanceUID", ""))
                if sop in sops and not path.name.startswith(DUPLICATES_KEPT):
                    fresh = "2.25." + str(int(sha256_bytes(rel.encode())[:32], 16))
                    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = fresh
                sops.add(sop)
                uids = {k: str(ds[k].value) for k in INSTANCE_UID_KEYWORDS if ds.get(k)}
                sop_class = str(ds.get("SOPClassUID", ""))
                syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
                tokens = _inject(ds, index, previous_sop)
                if path.name == MARKED_BURNED_IN:
                    ds.BurnedInAnnotation = "YES"
                elif path.name in LEFT_AS_IS:
                    assert "BurnedInAnnotation" not in ds, path.name
                else:
                    ds.BurnedInAnnotation = "NO"
                try:
                    data = _encode(ds)
                    pydicom.dcmread(io.BytesIO(data), force=False)
                except Exception:
                    corpus.unwritable.append(rel)
                    continue
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            corpus.sources.append(
                Source(rel, path.name, tokens, uids, ds.PatientBirthDate, sop_class, syntax)
            )
            previous_sop = uids.get("SOPInstanceUID", previous_sop)
    return corpus


@dataclass
class Run:
    out: Path
    summary: BatchSummary
    before: dict[str, str]
    after: dict[str, str]


def _hash_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return _build_corpus(tmp_path_factory.mktemp("phi-corpus"))


@pytest.fixture(scope="module")
def run(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("deid-out")
    before = _hash_tree(corpus.root)
    summary = anonymize_tree(corpus.root, out, CONFIG, processes=2)
    return Run(out, summary, before, _hash_tree(corpus.root))


@dataclass
class Pair:
    source: Source
    input: Dataset
    output: Dataset


def _read(data: bytes | Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)


@pytest.fixture(scope="module")
def pairs(corpus: Corpus, run: Run) -> list[Pair]:
    """(injected input, its output) for every corpus file that was not quarantined."""
    quarantined = {r.source_hash for r in run.summary.quarantined}
    deid = Deidentifier(CONFIG)
    found = []
    for source in corpus.sources:
        if _source_hash(source.rel) in quarantined:
            continue
        study, series, sop = (
            deid.uid(source.uids[k]) if k in source.uids else ""
            for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        )
        output = _read(run.out / study / series / f"{sop}.dcm")
        found.append(Pair(source, _read(corpus.root / source.rel), output))
    return found


def _walk(ds: Dataset, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], DataElement]]:
    """Every element, depth first, with its path of (tag, item index) steps."""
    for elem in ds:
        here = (*path, int(elem.tag))
        yield here, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from _walk(item, (*here, i))


def _element_at(ds: Dataset, path: tuple[Any, ...]) -> DataElement | None:
    node: Any = ds
    for i, step in enumerate(path):
        if i % 2 == 0:
            if step not in node:
                return None
            node = node[step]
        else:
            if step >= len(node.value):
                return None
            node = node.value[step]
    return node if isinstance(node, DataElement) else None


def _values(elem: DataElement) -> list[str]:
    value = elem.value
    if value is None:
        return []
    if isinstance(value, list | tuple | MultiValue):
        return [str(v) for v in value]
    return [str(value)]


# --------------------------------------------------------------------------- corpus tests


def test_the_corpus_covers_pydicoms_files(corpus: Corpus) -> None:
    shipped = [p for d in SOURCE_DIRS for p in (PYDICOM_DATA / d).rglob("*") if p.is_file()]
    assert len(shipped) == len(corpus.sources) + len(corpus.unreadable) + len(corpus.unwritable)
    assert len(corpus.sources) >= 150
    assert corpus.unreadable, "pydicom ships non-DICOM files; dcmread(force=False) refuses them"
    names = {s.name for s in corpus.sources}
    assert LEFT_AS_IS | {MARKED_BURNED_IN, "CT_small.dcm", "chrH31.dcm"} <= names
    syntaxes = set()
    for source in corpus.sources:
        ds = _read(corpus.root / source.rel)
        assert ds.PatientID == source.tokens["PID"]
        assert str(ds.get("SOPClassUID", "")) == source.sop_class, source.rel
        assert str(ds.file_meta.get("TransferSyntaxUID", "")) == source.syntax, source.rel
        syntaxes.add(source.syntax)
    assert len(syntaxes) >= 8  # native little and big endian, deflated, JPEG, JPEG 2000, RLE...


def test_every_input_is_an_output_or_a_quarantine_record(corpus: Corpus, run: Run) -> None:
    summary = run.summary
    assert summary.files == len(corpus.sources)
    assert summary.written + len(summary.quarantined) == summary.files
    outputs = [p for p in run.out.rglob("*") if p.is_file()]
    assert all(p.suffix == ".dcm" and not p.name.startswith(".") for p in outputs), outputs
    assert len(outputs) == summary.written, "an output was overwritten or lost"
    hashes = [r.source_hash for r in summary.quarantined]
    assert len(set(hashes)) == len(hashes)
    assert set(hashes) <= {_source_hash(s.rel) for s in corpus.sources}


def test_quarantine_reasons_are_radflows_own_and_name_no_phi(
    corpus: Corpus, run: Run, tmp_path: Path
) -> None:
    reasons = {}
    for record in run.summary.quarantined:
        assert record.reason in QUARANTINE_REASONS, record
        assert record.stage == "anonymize"
        reasons[corpus.source_for(record.source_hash).name] = record.reason
    assert reasons[MARKED_BURNED_IN] == "burned-in annotation"
    for name in LEFT_AS_IS:
        assert reasons[name] == "possible burned-in annotation"
    for source in corpus.sources:
        if "SOPInstanceUID" not in source.uids or "StudyInstanceUID" not in source.uids:
            assert reasons[source.name] == "incomplete DICOM file", source.rel
    # pydicom's MR_truncated.dcm, read and written back, has less pixel data than its image.
    assert reasons["MR_truncated.dcm"] == "truncated DICOM file"
    # Files sharing a SOP Instance UID (MR_small*.dcm, rtdose*.dcm, ...): the first one in
    # walk order is written, each later one is set aside rather than overwriting it.
    assert "MR_small.dcm" not in reasons
    assert reasons["MR_small_RLE.dcm"] == "duplicate SOP instance"
    written = tmp_path / "quarantine.jsonl"
    write_quarantine(run.summary, written)
    text = written.read_bytes()
    assert len(text.splitlines()) == len(run.summary.quarantined)
    assert not TOKEN_RE.search(text)
    for source in corpus.sources:  # records name sources by hash, never by path
        assert source.rel.encode() not in text


def test_the_sources_are_never_touched(run: Run) -> None:
    assert run.after == run.before


def test_no_injected_phi_token_in_any_output_byte(corpus: Corpus, run: Run) -> None:
    originals = sorted(
        {u for s in corpus.sources for u in s.uids.values() if u not in UID_dictionary},
        key=len,
        reverse=True,
    )
    uid_re = re.compile(
        rb"(?<![0-9.])(" + b"|".join(re.escape(u.encode()) for u in originals) + rb")(?![0-9.])"
    )
    outputs = sorted(p for p in run.out.rglob("*.dcm"))
    assert outputs
    for path in outputs:
        data = path.read_bytes()
        leaked = TOKEN_RE.search(data)
        assert leaked is None, f"{path.name}: {leaked.group()!r}"
        assert PRIVATE_CREATOR.encode().lower() not in data.lower(), path.name
        found = uid_re.search(data)
        assert found is None, f"{path.name}: an input instance UID {found.group()!r} survives"


def test_no_injected_phi_in_any_decoded_value(pairs: list[Pair]) -> None:
    token_re = re.compile(TOKEN_RE.pattern.decode(), re.IGNORECASE)
    for pair in pairs:
        originals = set(pair.source.uids.values()) - set(UID_dictionary)
        for path, elem in [*_walk(pair.output.file_meta), *_walk(pair.output)]:
            if elem.VR == "SQ" or elem.tag == 0x7FE00010:
                continue
            for value in _values(elem):
                assert not token_re.search(value), (pair.source.rel, path, value)
                assert value not in originals, (pair.source.rel, path)
        assert not pair.output.get("PatientBirthDate"), pair.source.rel
        for path, elem in _walk(pair.output):
            if elem.VR in ("DA", "DT"):
                assert pair.source.birth_date not in str(elem.value), (pair.source.rel, path)


def test_pixels_class_syntax_and_identity_flags_survive(pairs: list[Pair]) -> None:
    assert len(pairs) >= 100
    assert {p.source.syntax for p in pairs} >= {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGBaseline8Bit,
        JPEG2000Lossless,
    }
    basic = method_codes()["basic"].value
    for pair in pairs:
        src, out = pair.input, pair.output
        where = pair.source.rel
        if "PixelData" in src:
            assert out["PixelData"].value == src["PixelData"].value, where
        else:
            assert "PixelData" not in out, where
        assert out.SOPClassUID == src.SOPClassUID, where
        assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID, where
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID, where
        assert out.file_meta.MediaStorageSOPClassUID == out.SOPClassUID, where
        assert out.PatientIdentityRemoved == "YES", where
        codes = [
            (i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence
        ]
        assert (basic, "DCM") in codes, where
        assert out.PatientID == patient_pseudonym(SECRET, src.PatientID), where
        assert str(out.PatientName) == out.PatientID, where


def test_every_annex_e_attribute_is_handled_as_its_action_says(pairs: list[Pair]) -> None:
    """Each public top-level attribute of the input that Table E.1-1 lists, checked against the
    action `Profile.action` resolves for the Basic Profile (combined codes resolve to their last
    code). Exception: Patient's Name and Patient ID (Z in the table) are replaced by the keyed
    pseudonym, so that a study's instances stay linkable; checked in the test above."""
    profile = Profile.standard()
    seen: dict[str, int] = {}
    for pair in pairs:
        for elem in pair.input:
            tag = int(elem.tag)
            if elem.tag.is_private or tag in PSEUDONYMISED:
                continue
            action = profile.action(tag, frozenset())
            if action is None:
                continue
            seen[action] = seen.get(action, 0) + 1
            out = pair.output.get(tag)
            where = f"{pair.source.rel} {elem.tag} {elem.keyword} ({action})"
            # A D sequence is removed, like X (see radflow.dicom.deid._Context._sequence).
            if action == "X" or (action == "D" and elem.VR == "SQ"):
                assert out is None or tag in WRITTEN_BY_RADFLOW, where
                continue
            assert out is not None, where
            if elem.VR == "SQ":
                if action == "Z":
                    assert len(out.value) == 0, where
                else:
                    assert len(out.value) == len(elem.value), where
            elif action == "Z":
                assert out.is_empty, where
            elif action == "D":
                assert not out.is_empty, where
                if _values(out) == _values(elem):  # only when the input held the dummy already
                    assert _values(elem) == [str(_DUMMY.get(elem.VR))], where
            elif action == "U":
                if elem.is_empty:
                    assert out.is_empty, where
                    continue
                for before, after in zip(_values(elem), _values(out), strict=True):
                    if before in UID_dictionary:
                        assert after == before, where
                    else:
                        assert UID_RE.match(after) and len(after) <= 64, where
                        assert after != before, where
            else:
                pytest.fail(f"the Basic Profile resolved to {action}: {where}")
    assert {"X", "Z", "D", "U"} <= set(seen), seen


def test_uid_references_stay_consistent_and_injective(pairs: list[Pair]) -> None:
    """Every UI value of every output, file meta included, paired with the input's value at
    the same place: one input UID always becomes the same output UID (across files), and
    different input UIDs never become one."""
    mapping: dict[str, set[str]] = {}
    for pair in pairs:
        for source, output in (
            (pair.input.file_meta, pair.output.file_meta),
            (pair.input, pair.output),
        ):
            for path, elem in _walk(output):
                if elem.VR != "UI":
                    continue
                if path == (IMPLEMENTATION_CLASS_UID,):
                    continue  # names the writing software, not an instance; pydicom may set it
                before = _element_at(source, path)
                assert before is not None and before.VR == "UI", (pair.source.rel, path)
                for old, new in zip(_values(before), _values(elem), strict=True):
                    mapping.setdefault(old, set()).add(new)
    for old, new in mapping.items():
        assert len(new) == 1, f"{old} became {new}"
        (target,) = new
        if old in UID_dictionary:
            assert target == old
        else:
            assert target == pseudo_uid(SECRET, old)
    targets = [next(iter(v)) for v in mapping.values()]
    assert len(targets) == len(set(targets)), "two input UIDs became one output UID"
    # The cross-file references the corpus holds really were followed.
    by_sop = {p.source.uids["SOPInstanceUID"]: p for p in pairs}
    followed = 0
    for pair in pairs:
        ref = pair.input.SourceImageSequence[-1].ReferencedSOPInstanceUID
        target_pair = by_sop.get(ref)
        if target_pair is not None and target_pair is not pair:
            out_ref = pair.output.SourceImageSequence[-1].ReferencedSOPInstanceUID
            assert out_ref == target_pair.output.SOPInstanceUID
            followed += 1
    assert followed >= 50


def test_reid_map_is_private_and_outside_the_output(
    corpus: Corpus, run: Run, pairs: list[Pair], tmp_path: Path
) -> None:
    path = tmp_path / "reid" / "map.jsonl"
    write_reid_map(run.summary, path, SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert run.out not in path.resolve().parents

    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(entries) == len(run.summary.mapping) > 0
    deid = Deidentifier(CONFIG)
    for entry in entries:
        assert entry["patient_pseudonym"] == patient_pseudonym(SECRET, entry["patient_id"])
        assert entry["study_pseudonym_uid"] == deid.uid(entry["study_uid"])
    # original -> pseudonym for exactly the (patient, study) pairs that were written
    assert {(e["patient_id"], e["study_uid"]) for e in entries} == {
        (p.source.tokens["PID"], p.source.uids["StudyInstanceUID"]) for p in pairs
    }
    # The originals it holds are nowhere in the output (every token is searched for in every
    # output byte above), and nothing but DICOM files was written there.
    assert all(p.suffix == ".dcm" for p in run.out.rglob("*") if p.is_file())


def test_the_cli_never_writes_the_reid_map_inside_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from radflow.cli import app

    monkeypatch.setenv("RADFLOW_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("RADFLOW_SECRET", SECRET.decode())
    monkeypatch.setenv("RADFLOW_DEID__REID_DIR", str(tmp_path / "reid"))
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    original = _read(PYDICOM_DATA / "test_files" / "CT_small.dcm")
    original.PatientID = _token("CLI", 1)
    (src / "ct.dcm").write_bytes(_encode(original))
    runner = CliRunner()

    inside = dst / "map.jsonl"
    refused = runner.invoke(app, ["anonymize", str(src), str(dst), "--map-file", str(inside)])
    assert refused.exit_code != 0
    assert not inside.exists()
    assert not dst.exists() or not list(dst.rglob("*.dcm"))

    outside = tmp_path / "private" / "map.jsonl"
    done = runner.invoke(
        app, ["anonymize", str(src), str(dst), "--map-file", str(outside), "--processes", "1"]
    )
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600
    (entry,) = [json.loads(line) for line in outside.read_text().splitlines()]
    assert entry["patient_id"] == original.PatientID
    assert entry["accession"] == str(original.get("AccessionNumber", ""))
    assert entry["patient_pseudonym"] == patient_pseudonym(SECRET, original.PatientID)
    assert len(list(dst.rglob("*.dcm"))) == 1
    for path in dst.rglob("*"):
        if path.is_file():
            assert original.PatientID.encode() not in path.read_bytes(), path.name


# --------------------------------------------------------------------------- synthetic datasets

BASE_UID = "1.2.826.0.1.3680043.8.498.77"


def _dataset(patient_id: str = "PID-OPT-1", sop_class: str = CTImageStorage) -> Dataset:
    """A small instance with one attribute for each option to act on."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = f"{BASE_UID}.1"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{BASE_UID}.1"
    ds.StudyInstanceUID = f"{BASE_UID}.2"
    ds.SeriesInstanceUID = f"{BASE_UID}.3"
    ds.FrameOfReferenceUID = f"{BASE_UID}.4"
    ds.Modality = "CT"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700321"
    ds.PatientSex = "F"
    ds.PatientAge = "054Y"
    ds.PatientWeight = "61.5"
    ds.StudyDate = "20240305"
    ds.StudyTime = "101530.25"
    ds.SeriesDate = "20240306"
    ds.ContentDate = "20231350"  # not a date
    ds.AcquisitionDateTime = "20240305103000.250000-0500"
    ds.DeviceSerialNumber = "SN-4711"
    ds.StationName = "CTSTATION7"
    ds.InstitutionName = "Saint Example Hospital"
    ds.StudyDescription = f"CT chest for DOE JANE {patient_id} follow-up"
    ds.BurnedInAnnotation = "NO"
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = f"{BASE_UID}.5"
    item.AcquisitionDate = "20240301"
    ds.SourceImageSequence = Sequence([item])
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", "SAFE-VALUE")
    block.add_new(0x11, "LO", "PHIPRIVOPT001Q")
    inner = Dataset()
    inner.add_new(0x00990010, "LO", PRIVATE_CREATOR)
    inner.add_new(0x00991010, "LO", "PHIPRIVOPT002Q")
    block.add_new(0x12, "SQ", Sequence([inner]))
    other = ds.private_block(0x0011, "OTHER CREATOR", create=True)
    other.add_new(0x10, "LO", "PHIPRIVOPT003Q")
    ds.PixelData = b"\x00\x01" * 16
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 4, 4, 1, 16
    return ds


def _deidentified(ds: Dataset, *options: str, **kwargs: Any) -> Dataset:
    """`ds` de-identified under `options`, written and read back as a Part 10 file."""
    Deidentifier(DeidConfig(secret=SECRET, options=frozenset(options), **kwargs))(ds)
    return _read(_encode(ds))


def _da(day: dt.date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _parse_da(value: str) -> dt.date:
    assert re.fullmatch(r"[0-9]{8}", value), value
    return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))


def _private_tags(ds: Dataset) -> list[int]:
    return [int(elem.tag) for _, elem in _walk(ds) if elem.tag.is_private]


def test_basic_profile_without_options() -> None:
    original = _dataset()
    out = _deidentified(_dataset())
    for keyword in ("StudyDate", "StudyTime", "PatientBirthDate", "PatientSex"):
        assert out[keyword].is_empty, keyword  # Z
    for keyword in ("ContentDate", "SeriesDate", "AcquisitionDateTime", "InstitutionName"):
        # Z/D, X/D, X/Z/D, X/Z/D: the last code, a dummy
        assert not out[keyword].is_empty, keyword
        assert out[keyword].value != original[keyword].value, keyword
    for keyword in ("PatientAge", "PatientWeight", "StudyDescription"):
        assert keyword not in out, keyword  # X
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert out.DeidentificationMethod == method_text(())
    assert _private_tags(out) == []


def test_modified_dates_shift_da_and_dt_by_one_per_patient_number_of_days() -> None:
    option = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES
    shifts = {}
    for patient in ("PID-OPT-1", "PID-OPT-2"):
        original = _dataset(patient)
        out = _deidentified(_dataset(patient), option)
        days = date_shift_days(SECRET, patient)
        shifts[patient] = days
        assert -3650 <= days <= -1
        study = _parse_da(out.StudyDate)
        assert study - _parse_da(original.StudyDate) == dt.timedelta(days=days)
        assert _parse_da(out.SeriesDate) - study == dt.timedelta(days=1)
        inside = _parse_da(out.SourceImageSequence[0].AcquisitionDate)
        assert study - inside == dt.timedelta(days=4)  # the interval into a sequence is kept
        # DT: the date moves by the same days, time of day and UTC offset stay.
        assert out.AcquisitionDateTime == out.StudyDate + "103000.250000-0500"
        assert out.StudyTime == original.StudyTime  # TM is not shifted
        assert not out.get("ContentDate")  # an invalid date becomes empty, never kept
        assert not out.PatientBirthDate  # Z in every option
        assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert shifts["PID-OPT-1"] != shifts["PID-OPT-2"]


def test_full_dates_are_kept() -> None:
    original = _dataset()
    out = _deidentified(_dataset(), Option.RETAIN_LONGITUDINAL_FULL_DATES)
    for keyword in ("StudyDate", "StudyTime", "SeriesDate", "AcquisitionDateTime"):
        assert out[keyword].value == original[keyword].value, keyword
    assert out.SourceImageSequence[0].AcquisitionDate == "20240301"
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


@pytest.mark.parametrize(
    ("option", "kept"),
    [
        (Option.RETAIN_PATIENT_CHARACTERISTICS, ("PatientSex", "PatientAge", "PatientWeight")),
        (Option.RETAIN_DEVICE_IDENTITY, ("DeviceSerialNumber", "StationName")),
        (Option.RETAIN_INSTITUTION_IDENTITY, ("InstitutionName",)),
        (
            Option.RETAIN_UIDS,
            ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"),
        ),
    ],
)
def test_retain_options_keep_their_attributes(option: Option, kept: tuple[str, ...]) -> None:
    original = _dataset()
    out = _deidentified(_dataset(), option)
    without = _deidentified(_dataset())
    for keyword in kept:
        assert out[keyword].value == original[keyword].value, keyword
        assert without.get(keyword) != original[keyword].value, keyword
    if option == Option.RETAIN_UIDS:
        assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == f"{BASE_UID}.5"
        assert out.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    else:
        assert UID_RE.match(out.SOPInstanceUID)


def test_clean_descriptors_scrubs_the_patients_own_words() -> None:
    out = _deidentified(_dataset(), Option.CLEAN_DESCRIPTORS)
    assert out.StudyDescription == "CT chest for * * * follow-up"
    assert "StudyDescription" not in _deidentified(_dataset())


def test_retain_safe_private_keeps_exactly_the_allowed_element() -> None:
    allowed = frozenset({(PRIVATE_CREATOR, 0x10)})
    out = _deidentified(_dataset(), Option.RETAIN_SAFE_PRIVATE, safe_private=allowed)
    assert sorted(_private_tags(out)) == [0x00990010, 0x00991010]
    assert out[0x00990010].value == PRIVATE_CREATOR
    assert out[0x00991010].value == "SAFE-VALUE"
    # The allow-list alone does nothing without the option.
    assert _private_tags(_deidentified(_dataset(), safe_private=allowed)) == []


def test_every_element_of_an_odd_group_goes() -> None:
    """Odd groups are private whatever their element number: (gggg,0001-000F) are not allowed
    there by PS3.5 7.8.1, but a file may still carry them, and Table E.1-1 removes them."""
    ds = _dataset()
    ds.add_new(0x00990001, "LO", "PHILOWPRIV001Q")
    ds.add_new(0x00110005, "LO", "PHILOWPRIV002Q")
    out = _deidentified(ds)
    assert _private_tags(out) == []
    allowed = frozenset({(PRIVATE_CREATOR, 0x10)})
    ds = _dataset()
    ds.add_new(0x00990001, "LO", "PHILOWPRIV001Q")
    kept = _deidentified(ds, Option.RETAIN_SAFE_PRIVATE, safe_private=allowed)
    assert sorted(_private_tags(kept)) == [0x00990010, 0x00991010]


@pytest.mark.parametrize("option", sorted(Option))
def test_method_code_sequence_names_basic_plus_each_option(option: Option) -> None:
    out = _deidentified(_dataset(), option)
    codes = {
        (i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence
    }
    assert codes == {("113100", "DCM"), (method_codes()[option].value, "DCM")}
    assert len(out.DeidentificationMethod) <= 64


def test_method_code_sequence_with_every_compatible_option() -> None:
    options = sorted(set(Option) - {Option.RETAIN_LONGITUDINAL_FULL_DATES})
    out = _deidentified(_dataset(), *options)
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert sorted(codes) == sorted(["113100", *(method_codes()[o].value for o in options)])
    assert len(set(codes)) == len(codes)
    assert 0 < len(out.DeidentificationMethod) <= 64


def test_conflicting_or_unknown_options_are_refused() -> None:
    both = frozenset(
        {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
    )
    with pytest.raises(ValueError, match="longitudinal"):
        DeidConfig(secret=SECRET, options=both)
    with pytest.raises(ValueError, match="unknown"):
        DeidConfig(secret=SECRET, options=frozenset({"retain_everything"}))


# --------------------------------------------------------------------------- burned-in text


def test_burned_in_annotation_yes_is_quarantined() -> None:
    ds = _dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(QuarantineError) as err:
        Deidentifier(CONFIG)(ds)
    assert err.value.reason == "burned-in annotation"


def test_secondary_capture_without_the_flag_is_quarantined() -> None:
    ds = _dataset(sop_class=SecondaryCaptureImageStorage)
    del ds.BurnedInAnnotation
    with pytest.raises(QuarantineError) as err:
        Deidentifier(CONFIG)(ds)
    assert err.value.reason == "possible burned-in annotation"
    flagged_no = _dataset(sop_class=SecondaryCaptureImageStorage)
    assert _deidentified(flagged_no).PatientIdentityRemoved == "YES"


def test_allow_burned_in_passes_both() -> None:
    marked = _dataset()
    marked.BurnedInAnnotation = "YES"
    unmarked = _dataset(sop_class=SecondaryCaptureImageStorage)
    del unmarked.BurnedInAnnotation
    for ds in (marked, unmarked):
        assert _deidentified(ds, allow_burned_in=True).PatientIdentityRemoved == "YES"


# --------------------------------------------------------------------------- character sets

CHARSET_FILES = sorted(p.name for p in (PYDICOM_DATA / "charset_files").glob("*.dcm"))


@pytest.mark.parametrize("name", CHARSET_FILES)
def test_charset_files_read_back_with_their_charset_and_ascii_pseudonyms(name: str) -> None:
    path = PYDICOM_DATA / "charset_files" / name
    original = _read(path)
    names = [
        str(v)
        for _, elem in _walk(original)
        if elem.VR == "PN"
        for v in _values(elem)
        if str(v).strip()
    ]
    out = _deidentified(_read(path), allow_burned_in=True)
    assert out.get("SpecificCharacterSet") == original.get("SpecificCharacterSet")
    pseudonym = patient_pseudonym(SECRET, str(original.get("PatientID", "")))
    assert out.PatientID == pseudonym and str(out.PatientName) == pseudonym
    assert pseudonym.isascii()
    for _, elem in _walk(out):
        if elem.VR == "PN":
            for value in _values(elem):
                assert value not in names, (name, elem.tag)
                assert value in ("", pseudonym, "ANONYMOUS"), (name, elem.tag, value)


# --------------------------------------------------------------------------- bad input


def test_bad_input_becomes_quarantine_records(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    good = _read(PYDICOM_DATA / "test_files" / "CT_small.dcm")
    good_bytes = _encode(good)
    (src / "empty.dcm").write_bytes(b"")
    (src / "head.dcm").write_bytes(good_bytes[:200])
    (src / "notes.dcm").write_text("Patient PHINOTES001Q, not an image\n")
    raw = _read(PYDICOM_DATA / "test_files" / "CT_small.dcm")
    del raw.file_meta
    raw.preamble = None
    raw_buffer = io.BytesIO()
    raw.save_as(raw_buffer, enforce_file_format=False)
    (src / "no_meta.dcm").write_bytes(raw_buffer.getvalue())
    (src / "cut_pixels.dcm").write_bytes(good_bytes[: len(good_bytes) - 5000])
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        (src / name).write_bytes((PYDICOM_DATA / "test_files" / name).read_bytes())
    (src / "good.dcm").write_bytes(good_bytes)
    before = _hash_tree(src)

    summary = anonymize_tree(src, dst, CONFIG, processes=2)

    assert _hash_tree(src) == before
    reasons = {r.source_hash: r.reason for r in summary.quarantined}
    expected = {
        "empty.dcm": "not a DICOM file",
        "head.dcm": "incomplete DICOM file",
        "notes.dcm": "not a DICOM file",
        "no_meta.dcm": "not a DICOM file",
        "cut_pixels.dcm": "truncated DICOM file",
        "MR_truncated.dcm": "truncated DICOM file",
        "rtplan_truncated.dcm": "truncated DICOM file",
    }
    assert reasons == {_source_hash(name): reason for name, reason in expected.items()}
    assert summary.written == 1
    (output,) = (p for p in dst.rglob("*") if p.is_file())
    assert _read(output).PixelData == good.PixelData
    with pytest.raises(QuarantineError, match="truncated"):
        read_dicom(src / "cut_pixels.dcm")


# --------------------------------------------------------------------------- properties

patients = st.text(max_size=24)


@settings(max_examples=300, deadline=None)
@given(first=st.dates(), second=st.dates(), patient=patients)
def test_shift_date_keeps_intervals_and_stays_a_valid_da(
    first: dt.date, second: dt.date, patient: str
) -> None:
    days = date_shift_days(SECRET, patient)
    assert -3650 <= days <= -1
    shifted = []
    for day in (first, second):
        value = shift_date(_da(day), days)
        if day.toordinal() + days < 1:
            assert value == ""  # before year 1: no valid DA, so empty rather than kept
            continue
        assert _parse_da(value) == day + dt.timedelta(days=days)
        shifted.append(_parse_da(value))
    if len(shifted) == 2:
        assert shifted[1] - shifted[0] == second - first
    if len(shifted) == 2 and first <= second:
        assert shift_date(f"{_da(first)}-{_da(second)}", days) == "-".join(map(_da, shifted))


times = st.one_of(
    st.just(""),
    st.from_regex(r"\A([01][0-9]|2[0-3])\Z"),
    st.from_regex(r"\A([01][0-9]|2[0-3])[0-5][0-9]\Z"),
    st.from_regex(r"\A([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]\Z"),
    st.from_regex(r"\A([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]\.[0-9]{1,6}\Z"),
)
offsets = st.one_of(st.just(""), st.from_regex(r"\A[+-](0[0-9]|1[0-4])(00|15|30|45)\Z"))


@settings(max_examples=300, deadline=None)
@given(
    day=st.dates(min_value=dt.date(11, 1, 1)),
    time=times,
    offset=offsets,
    patient=patients,
)
def test_shift_datetime_moves_the_date_and_keeps_time_and_offset(
    day: dt.date, time: str, offset: str, patient: str
) -> None:
    days = date_shift_days(SECRET, patient)
    value = _da(day) + time + offset
    assert shift_datetime(value, days) == _da(day + dt.timedelta(days=days)) + time + offset
    later = day + dt.timedelta(days=3)
    shifted_range = shift_datetime(f"{value}-{_da(later)}{time}{offset}", days)
    assert shifted_range == (
        f"{_da(day + dt.timedelta(days=days))}{time}{offset}-"
        f"{_da(later + dt.timedelta(days=days))}{time}{offset}"
    )


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.text(min_size=1, max_size=64), unique=True, max_size=40))
def test_pseudo_uid_is_a_valid_2_25_uid_and_injective(values: list[str]) -> None:
    uids = [pseudo_uid(SECRET, v) for v in values]
    for uid in uids:
        assert len(uid) <= 64 and UID_RE.match(uid), uid
    assert len(set(uids)) == len(uids)
    deid = Deidentifier(CONFIG)
    for value, uid in zip(values, uids, strict=True):
        assert deid.uid(value) == (value if value in UID_dictionary else uid)
