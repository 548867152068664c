"""The Clean Pixel Data option (PS3.15 E.3.1, CID 7050 113101): burned-in text is found by
OCR, blanked and verified, or the object is refused; without the option, today's refusal.

Images come from tests/support/burned_in.py (names and IDs rendered in DejaVu fonts, every
glyph pixel known) and from pydicom's real ultrasound US1_UNCR.dcm. OCR is the real tesseract
binary (Debian's tesseract-ocr, `make test-deps`); a handful of small images keeps this fast.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytesseract
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)
from support.burned_in import (
    Sample,
    dicom_image,
    draw_text,
    screenshot_background,
    text_free_ultrasound,
    ultrasound_background,
)
from support.realdata import pydicom_file
from typer.testing import CliRunner

from radflow.cli import app
from radflow.dicom.burned_in import (
    OCR_UNAVAILABLE,
    REDACTION_FAILED,
    grey_view,
    verify_no_text,
)
from radflow.dicom.deid import DeidConfig, Deidentifier
from radflow.dicom.profile import Option
from radflow.errors import QuarantineError

SECRET = b"burned-in-test-secret-0123456789"
CLEAN = DeidConfig(secret=SECRET, options=frozenset({Option.CLEAN_PIXEL_DATA}))
BASIC = DeidConfig(secret=SECRET)


def _us_with_name(seed: int = 3) -> Sample:
    """An ultrasound-like frame with a name and an MRN at 14 px in its dark header."""
    rng = np.random.default_rng(seed)
    pixels = ultrasound_background(rng, 240, 320)
    texts = [
        draw_text(pixels, "DOE^JOHN", (6, 4), "DejaVuSans.ttf", 14, 230),
        draw_text(pixels, "MRN 12345678", (6, 24), "DejaVuSansMono.ttf", 14, 200),
    ]
    return Sample("us_name", "ultrasound", pixels, texts)


def _written(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _ocr_text(frame: np.ndarray) -> str:
    """An independent reading: tesseract's automatic layout, 3x upscaled, both polarities."""
    grey = grey_view(frame)
    text = ""
    for image in (grey, 255 - grey):
        big = Image.fromarray(image).resize((image.shape[1] * 3, image.shape[0] * 3))
        text += pytesseract.image_to_string(big, config="--psm 3")
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def test_rendered_name_is_blanked_flagged_and_unreadable() -> None:
    sample = _us_with_name()
    assert "DOE" in _ocr_text(sample.pixels)  # the text is readable before
    out = _written_after(dicom_image(sample.pixels, UltrasoundImageStorage), CLEAN)
    pixels = out.pixel_array
    fill = pixels.min()
    for text in sample.texts:
        assert (pixels[text.glyphs(240, 320)] == fill).all(), text.text
    assert out.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert "113101" in codes and "113100" in codes
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    read = _ocr_text(pixels)
    for token in ("DOE", "JOHN", "12345678", "MRN"):
        assert token not in read
    # Only the header was blanked: the fan below it is as it was.
    assert np.array_equal(pixels[60:], sample.pixels[60:])


def _written_after(ds: Dataset, config: DeidConfig) -> Dataset:
    Deidentifier(config)(ds)
    return _written(ds)


def test_text_free_image_passes_with_its_pixels_unchanged() -> None:
    sample = text_free_ultrasound(seed=0, count=1)[0]
    ds = dicom_image(sample.pixels, UltrasoundImageStorage)
    original = bytes(ds.PixelData)
    out = _written_after(ds, CLEAN)
    assert bytes(out.PixelData) == original
    assert out.BurnedInAnnotation == "NO"


def test_compressed_multiframe_rgb_is_cleaned_per_frame_and_written_uncompressed() -> None:
    rng = np.random.default_rng(5)
    frames = np.stack([screenshot_background(rng, 160, 400) for _ in range(2)])
    # Dark serif text on the grey side panel of the second frame only.
    text = draw_text(frames[1], "SMITH^ANNA", (8, 40), "DejaVuSerif.ttf", 14, (20, 20, 20))
    ds = dicom_image(frames, UltrasoundMultiFrameImageStorage)
    ds.compress(RLELossless, generate_instance_uid=False)
    sop_uid = ds.SOPInstanceUID
    out = _written_after(ds, CLEAN)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert int(out.NumberOfFrames) == 2 and out.PhotometricInterpretation == "RGB"
    pixels = out.pixel_array
    assert np.array_equal(pixels[0], frames[0])  # no text there, nothing blanked
    assert (pixels[1][text.glyphs(160, 400)] == pixels[1].min()).all()
    assert out.SOPInstanceUID != sop_uid  # mapped as every UID, not regenerated
    assert out.SOPInstanceUID == Deidentifier(CLEAN).uid(sop_uid)


def test_real_ultrasound_text_is_removed() -> None:
    """pydicom's US1_UNCR.dcm: a real RGB ultrasound with its site, exam and IDs burned in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(pydicom_file("US1_UNCR.dcm"))
    before = ds.pixel_array.copy()
    header = (slice(0, 108), slice(None))  # the device's text above the image
    read = _ocr_text(before[header])
    for token in ("BAPTIST", "MSCSKEL", "78DR78"):  # site, exam, an ID
        assert token in read
    out = _written_after(ds, CLEAN)
    after = out.pixel_array
    assert _ocr_text(after[header]) == ""  # not a letter or digit left to read
    assert (after[24:40, 20:88] == after.min()).all()  # the site name's box, blanked
    assert out.BurnedInAnnotation == "NO"
    changed = (after != before).any(axis=-1)
    assert 0 < changed.mean() < 0.1  # not the whole image


def test_text_left_in_an_image_is_refused_by_the_verifying_pass() -> None:
    # The verifying pass alone on an image nobody redacted: it must see the text.
    sample = _us_with_name()
    with pytest.raises(QuarantineError) as err:
        verify_no_text(sample.pixels[np.newaxis])
    assert err.value.reason == REDACTION_FAILED
    assert "DOE" not in err.value.detail and "1234" not in err.value.detail


def test_without_the_option_burned_in_objects_are_quarantined_as_before() -> None:
    sample = _us_with_name()
    marked = dicom_image(sample.pixels, UltrasoundImageStorage, burned_in="YES")
    with pytest.raises(QuarantineError) as err:
        Deidentifier(BASIC)(marked)
    assert err.value.reason == "burned-in annotation"
    unmarked = dicom_image(sample.pixels, SecondaryCaptureImageStorage, burned_in=None)
    with pytest.raises(QuarantineError) as err:
        Deidentifier(BASIC)(unmarked)
    assert err.value.reason == "possible burned-in annotation"


def test_missing_tesseract_refuses_instead_of_passing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without tesseract
    ds = dicom_image(_us_with_name().pixels, UltrasoundImageStorage, burned_in="NO")
    pixels = bytes(ds.PixelData)
    with pytest.raises(QuarantineError) as err:
        Deidentifier(CLEAN)(ds)
    assert err.value.reason == OCR_UNAVAILABLE
    assert bytes(ds.PixelData) == pixels


def test_cli_anonymize_takes_the_option(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    ds = dicom_image(_us_with_name().pixels, UltrasoundImageStorage)
    ds.save_as(src / "us.dcm", enforce_file_format=True)
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    result = CliRunner().invoke(
        app,
        [
            "anonymize",
            str(src),
            str(dst),
            "--option",
            "clean_pixel_data",
            "--secret-file",
            str(secret),
            "--map-file",
            str(tmp_path / "map.jsonl"),
            "--processes",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 de-identified, 0 quarantined" in result.output
    (written,) = dst.rglob("*.dcm")
    out = pydicom.dcmread(written)
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
