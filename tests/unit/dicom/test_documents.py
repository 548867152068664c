"""Encapsulated documents leave only when radflow has checked them.

Real Encapsulated PDF instances (PS3.3 A.45.1) are built with pydicom around PDFs drawn with
matplotlib's PDF backend (as radflow's own study report is) and one PDF nobody here wrote
(matplotlib's vector icon, no text). By default every document is quarantined; with
`documents="check_text"` a PDF is refused when its pages spell any of the header's patient
identifiers, however extraction breaks the words, and is otherwise rebuilt without its
metadata, its text unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import pydicom
import pytest
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pypdf import PdfReader, PdfWriter
from pypdf.annotations import Text
from pypdf.generic import DecodedStreamObject, NameObject
from pypdf.xmp import XmpInformation

from radflow.dicom.batch import anonymize_tree, deidentify_bytes
from radflow.dicom.deid import DeidConfig, Deidentifier, patient_pseudonym
from radflow.dicom.documents import find_identifiers, header_identifiers
from radflow.errors import QuarantineError

SECRET = b"documents-secret-0b9c1d2e3f4a5b6c7d8e9f0a1b2c3d4e"
QUARANTINE = DeidConfig(secret=SECRET)
CHECK_TEXT = DeidConfig(secret=SECRET, documents="check_text")
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
PYDICOM_CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
MATPLOTLIB_ICON = Path(matplotlib.get_data_path()) / "images" / "home.pdf"

PATIENT = {
    "PatientName": "Oberholzer^Jane^Marie",
    "PatientID": "4711-0815",
    "OtherPatientIDs": "H998877",
    "PatientBirthDate": "19800314",
    "AccessionNumber": "ACC20240117",
}
# Every spelling of the patient's identity that must not leave, in any case.
PHI = ("Oberholzer", "Jane", "Marie", "4711-0815", "47110815", "H998877", "ACC20240117")
PHI += ("19800314", "1980-03-14", "14.03.1980", "03/14/1980")
CLEAN_TEXT = ["Chest CT, 17 January 2024", "No focal lung lesion.", "Impression: normal study."]


# ----------------------------------------------------------------------------- builders


def pdf(pages: list[list[str]], info: dict[str, str] | None = None) -> bytes:
    """A PDF with one page per list of lines, drawn as radflow draws its study report."""
    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"CreationDate": None, **(info or {})}) as doc:
        for lines in pages:
            fig = Figure(figsize=(8.27, 11.69))
            for row, line in enumerate(lines):
                fig.text(0.1, 0.9 - 0.04 * row, line, fontsize=11)
            if not lines:  # a "scanned" page: pixels only
                fig.figimage(np.random.default_rng(0).integers(0, 255, (64, 64)), 100, 100)
            doc.savefig(fig)
    return buffer.getvalue()


def with_xmp_and_note(data: bytes, name: str) -> bytes:
    """`data` plus an XMP packet (of the document and of a font) and a sticky note, each
    naming the patient."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    packet = DecodedStreamObject()
    packet.set_data(
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
        b' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        b' xmlns:dc="http://purl.org/dc/elements/1.1/"><rdf:Description rdf:about="">'
        b"<dc:creator><rdf:Seq><rdf:li>" + name.encode() + b"</rdf:li></rdf:Seq></dc:creator>"
        b"</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    writer.xmp_metadata = XmpInformation(packet)
    font = next(iter(writer.pages[0]["/Resources"]["/Font"].values())).get_object()
    font[NameObject("/Metadata")] = writer._add_object(packet)  # XMP of one resource
    writer.add_annotation(0, Text(text=f"call {name}", rect=(50, 50, 80, 80)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encapsulated(
    document: bytes, sop_class: str = PDF_CLASS, mime: str = "application/pdf"
) -> Dataset:
    """An Encapsulated Document instance of the patient, BurnedInAnnotation NO."""
    ds = Dataset()
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    seed = hashlib.sha256(document).hexdigest()
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "sop"])
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.ContentDate = "20240117"
    ds.StudyTime = ds.ContentTime = "101500"
    ds.Modality = "DOC"
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = "Radiology report"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = mime
    ds.EncapsulatedDocument = document + b"\0" * (len(document) % 2)
    ds.EncapsulatedDocumentLength = len(document)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def refusal(ds: Dataset, config: DeidConfig = CHECK_TEXT) -> QuarantineError:
    with pytest.raises(QuarantineError) as caught:
        Deidentifier(config)(ds)
    message = f"{caught.value} {caught.value.reason} {caught.value.detail}".casefold()
    for value in PHI:
        assert value.casefold() not in message
    return caught.value


def phi_in(data: bytes) -> list[str]:
    """The PHI spellings found in `data` as bytes, and inside every Flate stream of it."""
    texts = [data]
    start = data.find(b"stream")
    while start != -1:
        body = data[start + len(b"stream") :].lstrip(b"\r\n")
        with contextlib.suppress(zlib.error):  # not a Flate stream, or "endstream"
            texts.append(zlib.decompressobj().decompress(body))
        start = data.find(b"stream", start + 1)
    haystack = b"\n".join(texts).lower()
    return [
        value
        for value in PHI
        for encoded in (value.encode(), value.encode("utf-16-be"))
        if encoded.lower() in haystack
    ]


def page_texts(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


# ------------------------------------------------------------------ the default: quarantine


def test_the_generator_writes_text_pypdf_reads_back() -> None:
    assert page_texts(pdf([CLEAN_TEXT, ["second page"]])) == ["\n".join(CLEAN_TEXT), "second page"]


def test_a_pdf_naming_the_patient_is_quarantined_by_default_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    report = encapsulated(pdf([["Patient: Jane Oberholzer", "MRN 4711-0815", "No lesion."]]))
    (src / "report.dcm").write_bytes(part10(report))
    ct = pydicom.dcmread(PYDICOM_CT)  # a real image of the same delivery goes through
    ct.BurnedInAnnotation = "NO"
    ct.save_as(src / "ct.dcm")
    before = {p.name: p.read_bytes() for p in src.iterdir()}

    summary = anonymize_tree(src, dst, QUARANTINE, processes=1)

    assert (summary.files, summary.written) == (2, 1)
    (record,) = summary.quarantined
    assert (record.reason, record.error_class) == ("encapsulated document", "QuarantineError")
    written = [p for p in dst.rglob("*") if p.is_file()]
    assert len(written) == 1
    assert pydicom.dcmread(written[0]).SOPClassUID == ct.SOPClassUID
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_the_default_quarantine_says_how_to_check_instead() -> None:
    err = refusal(encapsulated(pdf([CLEAN_TEXT])), QUARANTINE)
    assert err.reason == "encapsulated document"
    assert "option to check its text is off" in err.detail


@pytest.mark.parametrize(
    ("sop_class", "mime", "kind"),
    [
        ("1.2.840.10008.5.1.4.1.1.104.2", "text/XML", "CDA"),
        ("1.2.840.10008.5.1.4.1.1.104.3", "model/stl", "STL"),
        ("1.2.840.10008.5.1.4.1.1.104.4", "model/obj", "OBJ"),
        ("1.2.840.10008.5.1.4.1.1.104.5", "model/mtl", "MTL"),
    ],
)
@pytest.mark.parametrize("config", [QUARANTINE, CHECK_TEXT], ids=["default", "check_text"])
def test_cda_and_3d_models_are_always_quarantined(
    sop_class: str, mime: str, kind: str, config: DeidConfig
) -> None:
    cda = b"<ClinicalDocument><recordTarget>nothing identifying</recordTarget></ClinicalDocument>"
    err = refusal(encapsulated(cda, sop_class, mime), config)
    assert err.reason == "encapsulated document"
    assert f"Encapsulated {kind} is always quarantined" in err.detail


def test_a_document_under_another_sop_class_is_quarantined_too() -> None:
    ds = encapsulated(pdf([CLEAN_TEXT]), sop_class="1.2.840.10008.5.1.4.1.1.7")
    assert refusal(ds).reason == "encapsulated document"


# ------------------------------------------------------------------------ check_text: refused


@pytest.mark.parametrize(
    ("lines", "kind"),
    [
        (["Patient: Jane", "OBERHOLZER, seen today"], "patient name"),
        (["Patient: Ober-", "holzer"], "patient name"),  # hyphenated across a line
        (["Patient: Ober holzer"], "patient name"),  # a word split by extraction
        (["patient: oberholzer"], "patient name"),
        (["Referred: Obérholzer"], "patient name"),  # accents folded
        (["MRN 4711", "0815"], "patient ID"),
        (["MRN 47110815"], "patient ID"),
        (["Prior record h998877"], "other patient ID"),
        (["Accession acc-20240117"], "accession number"),
    ],
)
def test_a_pdf_spelling_an_identifier_is_refused_naming_only_its_kind(
    lines: list[str], kind: str
) -> None:
    err = refusal(encapsulated(pdf([CLEAN_TEXT, lines])))
    assert (err.reason, err.detail) == ("document holds patient identifiers", kind)


@pytest.mark.parametrize(
    "spelled", ["14.03.1980", "14/03/1980", "03/14/1980", "1980-03-14", "19800314", "14 Mar 1980"]
)
def test_a_pdf_with_the_birth_date_is_refused(spelled: str) -> None:
    err = refusal(encapsulated(pdf([[*CLEAN_TEXT, f"DOB {spelled}"]])))
    assert (err.reason, err.detail) == ("document holds patient identifiers", "birth date")


def test_every_kind_found_is_named() -> None:
    lines = ["Jane Oberholzer", "born 14.03.1980", "MRN 4711-0815"]
    err = refusal(encapsulated(pdf([lines])))
    assert err.detail == "birth date, patient ID, patient name"


def test_names_match_whole_words_only() -> None:
    ds = Dataset()
    ds.PatientName = "Li^Wei^J"  # a two-letter family name, a one-letter middle initial
    ds.PatientID = "7"
    identifiers = header_identifiers(ds)
    assert identifiers == [("patient name", "Li"), ("patient name", "Wei")]
    assert find_identifiers("Clinical history: weight loss. J. Smith, 7 mm", identifiers) == []
    assert find_identifiers("Patient LI, wei", identifiers) == identifiers


# ------------------------------------------------------------------ check_text: unverifiable


def _encrypted(data: bytes) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt("secret-password")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (MATPLOTLIB_ICON.read_bytes(), "a page holds no text"),  # real, vector only
        (pdf([[]]), "a page holds no text"),  # a scan: pixels only
        (pdf([CLEAN_TEXT, []]), "a page holds no text"),  # a scanned page after a text page
        (_encrypted(pdf([CLEAN_TEXT])), "the PDF is encrypted"),
        (b"%PDF-1.4 this is not a PDF at all", "the PDF cannot be read"),
    ],
    ids=["matplotlib-icon", "image-only", "scanned-page", "encrypted", "broken"],
)
def test_a_pdf_radflow_cannot_read_is_refused(document: bytes, why: str) -> None:
    err = refusal(encapsulated(document))
    assert err.reason == "no extractable text: cannot verify"
    assert err.detail.startswith(why)


# ---------------------------------------------------------------------- check_text: kept


def test_a_clean_pdf_is_kept_without_its_metadata_and_with_its_text() -> None:
    info = {
        "Author": "Jane Oberholzer",
        "Title": "Report 4711-0815",
        "Subject": "born 14.03.1980",
        "Keywords": "ACC20240117 H998877",
        "Creator": "Marie Oberholzer's workstation",
    }
    document = with_xmp_and_note(pdf([CLEAN_TEXT, ["Page 2: no change since 2023."]], info), "Jane")
    source = PdfReader(io.BytesIO(document))
    assert source.metadata["/Author"] == "Jane Oberholzer"
    assert source.xmp_metadata is not None and "/Annots" in source.pages[0]
    assert phi_in(document)  # the input does carry the identity, in its metadata and note
    ds = encapsulated(document)

    data, result = deidentify_bytes(ds, Deidentifier(CHECK_TEXT))

    assert phi_in(data) == []
    out = pydicom.dcmread(io.BytesIO(data))
    assert str(out.PatientName) == out.PatientID == patient_pseudonym(SECRET, PATIENT["PatientID"])
    assert result.original_patient_id == PATIENT["PatientID"]
    assert out.PatientIdentityRemoved == "YES"
    assert not out.get("PatientBirthDate") and not out.get("AccessionNumber")
    kept = bytes(out.EncapsulatedDocument)
    assert len(kept) % 2 == 0
    clean = kept[: out.EncapsulatedDocumentLength]
    assert clean.rstrip(b"\0") == clean and len(kept) - len(clean) in (0, 1)
    reader = PdfReader(io.BytesIO(clean))
    assert reader.metadata is None
    assert reader.xmp_metadata is None
    assert all("/Annots" not in page for page in reader.pages)
    assert page_texts(clean) == page_texts(document)
    assert page_texts(clean)[0] == "\n".join(CLEAN_TEXT)


def test_the_option_is_part_of_the_address_and_is_checked() -> None:
    assert QUARANTINE.describe()["documents"] == "quarantine"
    assert CHECK_TEXT.describe() != QUARANTINE.describe()
    with pytest.raises(ValueError, match="documents must be one of"):
        DeidConfig(secret=SECRET, documents="keep")  # type: ignore[arg-type]


def test_the_setting_reaches_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from radflow.config import load_settings

    monkeypatch.setenv("RADFLOW_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("RADFLOW_SECRET", SECRET.decode())
    assert load_settings().deid_config().documents == "quarantine"
    monkeypatch.setenv("RADFLOW_DEID__DOCUMENTS", "check_text")
    assert load_settings().deid_config() == CHECK_TEXT


def test_the_cli_checks_documents_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from radflow.cli import app

    monkeypatch.setenv("RADFLOW_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("RADFLOW_SECRET", SECRET.decode())
    src, dst, reid = tmp_path / "src", tmp_path / "dst", tmp_path / "reid" / "map.jsonl"
    src.mkdir()
    clean = pdf([CLEAN_TEXT], {"Author": "Jane Oberholzer"})
    (src / "clean.dcm").write_bytes(part10(encapsulated(clean)))
    (src / "named.dcm").write_bytes(part10(encapsulated(pdf([["Jane Oberholzer"]]))))
    args = ["anonymize", str(src), str(dst), "--map-file", str(reid), "--processes", "1"]
    runner = CliRunner()

    bad = runner.invoke(app, [*args, "--documents", "keep"])
    assert bad.exit_code != 0 and not dst.exists()
    done = runner.invoke(app, [*args, "--documents", "check-text"])

    assert done.exit_code == 0, done.output
    assert done.output.startswith("2 files: 1 de-identified, 1 quarantined")
    (record,) = [json.loads(line) for line in (dst / "_quarantine.jsonl").read_text().splitlines()]
    assert record["reason"] == "document holds patient identifiers"
    (written,) = dst.rglob("*.dcm")
    assert page_texts(bytes(pydicom.dcmread(written).EncapsulatedDocument)) == page_texts(clean)
    for path in dst.rglob("*"):
        if path.is_file():
            assert phi_in(path.read_bytes()) == [], path.name
