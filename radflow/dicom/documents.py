"""Encapsulated documents (PS3.3 A.45.1 PDF, A.45.2 CDA, A.85 STL/OBJ/MTL): never
passed through unchanged.

The de-identification profile cleans the DICOM header around a document, not the document:
a PDF report keeps the patient's name in its pages and in its own metadata whatever
Table E.1-1 says. So by default radflow quarantines every encapsulated document. With
`documents="check_text"` an Encapsulated PDF is kept when every page has text and none of
the patient's identifiers from the header appears in it; it is then rewritten from its pages
alone (no document information dictionary, XMP, annotations or attachments: what was not
checked is not kept). CDA and the 3D model formats are always quarantined: radflow does not
look inside them.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Literal

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from radflow.errors import QuarantineError

if TYPE_CHECKING:
    from pypdf import PdfReader

DocumentMode = Literal["quarantine", "check_text"]
DOCUMENT_MODES: tuple[DocumentMode, ...] = ("quarantine", "check_text")

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
# PS3.4 B.5: the other Encapsulated Document storage SOP classes.
_OTHER_DOCUMENTS = {
    "1.2.840.10008.5.1.4.1.1.104.2": "CDA",
    "1.2.840.10008.5.1.4.1.1.104.3": "STL",
    "1.2.840.10008.5.1.4.1.1.104.4": "OBJ",
    "1.2.840.10008.5.1.4.1.1.104.5": "MTL",
}
NO_TEXT = "no extractable text: cannot verify"
# What a broken PDF makes pypdf raise besides its own PyPdfError: it parses untrusted bytes.
_PDF_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OSError, RecursionError)

# Keys of a page that carry content outside its text (ISO 32000-1 7.7.3.3): comments, form
# fields and attachments (Annots), JavaScript (AA), per-page XMP and application data.
_PAGE_KEYS_DROPPED = ("/Annots", "/AA", "/Metadata", "/PieceInfo")
_OBJECT_KEYS_DROPPED = ("/Metadata", "/PieceInfo")
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


def screen_document(ds: Dataset, mode: DocumentMode) -> bytes | None:
    """Quarantine an encapsulated document, or (`check_text`, PDF only) check its text for the
    header's identifiers and return a copy without its metadata, for `put_document` to put
    back after the walk (Table E.1-1 gives Encapsulated Document D: the walk replaces it).

    Must run before the header is de-identified: the identifiers are read from it. A dataset
    that is not an encapsulated document is left alone (None)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == ENCAPSULATED_PDF:
        if mode != "check_text":
            raise QuarantineError(
                "encapsulated document",
                "an Encapsulated PDF is quarantined while the option to check its text is off"
                " (deid.documents = check_text)",
            )
        return checked_pdf(ds)
    if sop_class in _OTHER_DOCUMENTS or "EncapsulatedDocument" in ds:
        kind = _OTHER_DOCUMENTS.get(sop_class, "document of another SOP class")
        raise QuarantineError(
            "encapsulated document",
            f"an Encapsulated {kind} is always quarantined: radflow does not check its content",
        )
    return None


def checked_pdf(ds: Dataset) -> bytes:
    """The Encapsulated PDF of `ds` rebuilt from its pages, if each page has text and none
    holds an identifier of the header; else a QuarantineError naming the kinds found."""
    from pypdf.errors import PyPdfError

    document = ds.get("EncapsulatedDocument")
    if not document:
        raise QuarantineError(NO_TEXT, "the Encapsulated PDF holds no document")
    data = _strip_padding(bytes(document), ds.get("EncapsulatedDocumentLength"))
    reader = _open(data)
    text = _document_text(reader)
    kinds = sorted({kind for kind, _ in find_identifiers(text, header_identifiers(ds))})
    if kinds:
        raise QuarantineError("document holds patient identifiers", ", ".join(kinds))
    try:
        return pages_only(reader)
    except (PyPdfError, *_PDF_ERRORS):
        raise QuarantineError("document cannot be rewritten", "pypdf cannot write it") from None


def put_document(ds: Dataset, document: bytes) -> None:
    # PS3.5 7.1.1: values have even length; Encapsulated Document Length counts the document
    # without its padding byte (PS3.3 C.24.2).
    ds.EncapsulatedDocument = document + b"\x00" * (len(document) % 2)
    if "EncapsulatedDocumentLength" in ds:
        ds.EncapsulatedDocumentLength = len(document)


def _strip_padding(data: bytes, declared: object) -> bytes:
    if isinstance(declared, int) and 0 < declared <= len(data):
        return data[:declared]
    return data


def _open(data: bytes) -> PdfReader:
    # pypdf is imported here, not at the top: every worker imports this module, and most
    # deliveries hold no document (pypdf takes about 0.1 s to import).
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise QuarantineError(NO_TEXT, "the PDF is encrypted")
        pages = len(reader.pages)
    except (PyPdfError, *_PDF_ERRORS):
        raise QuarantineError(NO_TEXT, "the PDF cannot be read") from None
    if pages == 0:
        raise QuarantineError(NO_TEXT, "the PDF has no pages")
    return reader


def _document_text(reader: PdfReader) -> str:
    """Every page's text. The document's own metadata (information dictionary, XMP) is not
    searched: it is not kept (`pages_only`), so what it says cannot leave.

    A page without text is a scan or a picture (or blank): radflow cannot tell which, nor
    read it, so the whole document is refused."""
    from pypdf.errors import PyPdfError

    parts = []
    try:
        for page in reader.pages:
            text = page.extract_text() or ""
            if not text.strip():
                raise QuarantineError(NO_TEXT, "a page holds no text (a scan or an image?)")
            parts.append(text)
    except (PyPdfError, *_PDF_ERRORS):
        raise QuarantineError(NO_TEXT, "the PDF's text cannot be extracted") from None
    return "\n".join(parts)


def pages_only(reader: PdfReader) -> bytes:
    """The document rebuilt from its pages alone: no information dictionary (pypdf would add
    its own Producer), no XMP, outline, names tree (attachments, JavaScript), form or
    annotations; the text on the pages is what was checked, and all that is kept."""
    from pypdf import PdfWriter
    from pypdf.generic import NameObject

    writer = PdfWriter()
    seen: set[int] = set()
    for page in reader.pages:
        # Off the reader's page before it is copied: the writer copies what a page refers
        # to, and would keep the objects of a key removed later (unreferenced, yet in the file).
        for key in _PAGE_KEYS_DROPPED:
            if key in page:
                del page[NameObject(key)]
        _drop_metadata(page, seen)
        writer.add_page(page)
    writer.metadata = None
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _drop_metadata(obj: object, seen: set[int]) -> None:
    """Remove XMP (/Metadata) and application data (/PieceInfo) from everything a page uses:
    images, forms and fonts may carry their own (ISO 32000-1 14.3.2, 14.5)."""
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    if isinstance(obj, IndirectObject):
        obj = obj.get_object()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, DictionaryObject):  # streams too
        for key in _OBJECT_KEYS_DROPPED:
            obj.pop(key, None)
        for key, value in list(obj.items()):
            if key not in ("/Parent", "/P"):  # back to the page tree: already walked
                _drop_metadata(value, seen)
    elif isinstance(obj, ArrayObject):
        for value in obj:
            _drop_metadata(value, seen)


# --- the patient's identifiers and where they appear -------------------------------------


def header_identifiers(ds: Dataset) -> list[tuple[str, str]]:
    """(kind, value) for each identifier of the patient in the header that a document might
    repeat.

    Names: the family, given and middle components (PS3.5 6.2) of every group; prefixes and
    suffixes ("Dr", "Jr", "III") identify nobody and would match most reports. Components of
    one character (initials) are left out: as whole words they occur in any text. A two-letter
    family name ("Li", "Wu") is kept: it is matched as whole words, never inside one."""
    found: list[tuple[str, str]] = []
    for keyword in ("PatientName", "OtherPatientNames", "PatientBirthName"):
        for value in _values(ds.get(keyword)):
            for group in value.split("="):
                found.extend(("patient name", c) for c in group.split("^")[:3])
    for keyword, kind in (("PatientID", "patient ID"), ("AccessionNumber", "accession number")):
        found.extend((kind, v) for v in _values(ds.get(keyword)))
    found.extend(("other patient ID", v) for v in _values(ds.get("OtherPatientIDs")))
    for item in ds.get("OtherPatientIDsSequence") or []:
        found.extend(("other patient ID", v) for v in _values(item.get("PatientID")))
    for value in _values(ds.get("PatientBirthDate")):
        found.extend(("birth date", v) for v in date_spellings(value))
    return [(kind, v) for kind, v in found if len(_compact(v)) >= 2]


def _values(value: object) -> Iterator[str]:
    for v in value if isinstance(value, MultiValue | list) else [value]:
        if v is not None and str(v).strip():
            yield str(v).strip()


def date_spellings(value: str) -> list[str]:
    """A DA value as people write it: YYYYMMDD, YYYY-MM-DD, DD.MM.YYYY, MM/DD/YYYY and
    DD/MM/YYYY (each also without leading zeros) and with the English month name."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", value.strip())
    if match is None:
        return []
    year, month, day = match.groups()
    m, d = str(int(month)), str(int(day))
    spellings = [f"{year}{month}{day}", f"{year}-{month}-{day}"]
    for dd, mm in ((day, month), (d, m)):
        spellings += [f"{dd}.{mm}.{year}", f"{mm}/{dd}/{year}", f"{dd}/{mm}/{year}"]
    if 1 <= int(month) <= 12:
        name = _MONTHS[int(month) - 1]
        for spelled in (name, name[:3]):
            spellings += [f"{d} {spelled} {year}", f"{spelled} {d} {year}"]
    return list(dict.fromkeys(spellings))


def _fold(text: str) -> str:
    """Case, accents and compatibility forms folded: "MÜLLER", "Müller" and "muller" agree."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", _fold(text))


def _compact(text: str) -> str:
    return "".join(_words(text))


def find_identifiers(text: str, identifiers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The identifiers that occur in `text` as a run of whole words, ignoring case, accents,
    punctuation and white space, and joining words split apart: text extraction breaks lines,
    splits words at kerning ("Sm ith") and hyphens, and a "123-456" in the header may be
    printed "123 456". Matching whole words keeps "Li" from matching "clinical"."""
    words = _words(text)
    joined = "".join(words)
    bounds = {0}
    position = 0
    for word in words:
        position += len(word)
        bounds.add(position)
    hits = []
    for kind, value in identifiers:
        needle = _compact(value)
        start = joined.find(needle)
        while start != -1:
            if start in bounds and start + len(needle) in bounds:
                hits.append((kind, value))
                break
            start = joined.find(needle, start + 1)
    return hits
