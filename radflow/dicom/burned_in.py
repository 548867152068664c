"""Clean Pixel Data (PS3.15 E.3.1; PS3.16 CID 7050 code 113101): find burned-in text by OCR,
blank it in the pixel data, and verify by a second OCR pass that none is left.

OCR is tesseract (Debian's `tesseract-ocr` and `tesseract-ocr-eng`) through pytesseract, which
runs the tesseract binary once per image: no compiled binding to rebuild against each
libtesseract. An object this module cannot clean is refused (QuarantineError), never passed.

Detection, tuned on tests/support/burned_in.py's corpus (seed 0) and pydicom's real
ultrasound (bench/burned_in_bench.py measures a held-out seed): two tesseract passes per
frame in sparse-text mode (`--psm 11`: text scattered over an image, as devices and screens
print it), both upscaled 2x (tesseract reads small text badly):

- the plain view: the frame's grey levels, inverted when the frame is mostly dark (tesseract
  reads dark text on a light page best); a word counts at confidence >= 50 with 2 letters or
  digits, or at any confidence where the frame around it is flat (`_on_flat`);
- the local-contrast view: each pixel's distance from the median of its 15x15 neighbourhood,
  saturated at 64 grey levels, inverted, which turns light-on-dark, dark-on-light and faint
  grey-on-grey text alike into dark strokes on white. It also turns ultrasound speckle into
  strokes that tesseract reads as one- and two-letter "words" at confidence up to about 85,
  so there a word counts only with 3 letters or digits at confidence >= 60 ("readable").

A text line with a credible word is blanked from its first to its last word of similar
height (word boxes miss the parts of a line tesseract could not read), widened along the
line where its ink goes on (`along_the_line`), with a margin (`TextBox.grown`). The
verifying pass looks for readable words only: 3 letters or digits, at confidence >= 60 or
on a flat background.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from radflow.errors import QuarantineError

REDACTION_FAILED = "burned-in text remains after redaction"
OCR_UNAVAILABLE = "OCR unavailable"

_SPARSE_TEXT = "--psm 11"
_RAW_MIN_CONFIDENCE = 50.0
_RAW_MIN_CHARACTERS = 2
_EXTRA_ROUNDS = 2
_PLAIN_SCALE = 2
_WEAK_CONFIDENCE = 0.0  # a name like DOE^JOHN reads right at confidence 17
_FLAT_SPREAD = 8.0  # grey levels around the median of a plain background
_FLAT_SHARE = 0.8
_MIN_INK_CONTRAST = 24  # grey levels: less is not a stroke worth following
_MAX_TEXT_HEIGHT = 64  # px, and at most a quarter of the frame: taller "words" are anatomy
_CONTRAST_WINDOW = 15
_CONTRAST_SATURATION = 64.0
_CONTRAST_SCALE = 2
_READABLE_CONFIDENCE = 60.0
_READABLE_CHARACTERS = 3
_OCR_TIMEOUT_S = 120
_PALETTE_ELEMENTS = (
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "PaletteColorLookupTableUID",
)


@dataclass(frozen=True)
class TextBox:
    """A region OCR read text in: x0, y0 inclusive, x1, y1 exclusive, in frame pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    def grown(self, rows: int, cols: int) -> TextBox:
        """With a margin: a quarter of the height above and below, half of it to the sides
        (where a character tesseract did not read may follow), plus 2 px for antialiasing."""
        height = self.y1 - self.y0
        return TextBox(
            max(0, self.x0 - 2 - height // 2),
            max(0, self.y0 - 2 - height // 4),
            min(cols, self.x1 + 2 + height // 2),
            min(rows, self.y1 + 2 + height // 4),
        )


def ocr_available() -> bool:
    """Whether the tesseract binary is on PATH now (looked up at each call, not cached)."""
    import pytesseract

    return shutil.which(pytesseract.pytesseract.tesseract_cmd) is not None


def grey_view(frame: np.ndarray) -> np.ndarray:
    """What OCR reads: one frame as 8-bit grey, its own range stretched to 0-255."""
    values = frame.astype(np.float64)
    if values.ndim == 3:
        values = values @ np.array([0.299, 0.587, 0.114])
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def plain_view(grey: np.ndarray) -> np.ndarray:
    """The frame as tesseract reads best: dark text on a light page (a dark frame inverted)."""
    return (255 - grey) if np.median(grey) < 128 else grey


def local_contrast_view(grey: np.ndarray) -> np.ndarray:
    """Strokes of either polarity as dark on white: distance from the local median."""
    from scipy import ndimage  # here, not at the top: de-identification without OCR skips it

    background: np.ndarray = ndimage.median_filter(grey, size=_CONTRAST_WINDOW)
    distance = np.abs(grey.astype(np.int16) - background.astype(np.int16))
    scaled = np.clip(distance * (255.0 / _CONTRAST_SATURATION), 0, 255)
    return (255 - scaled).astype(np.uint8)


def _ocr_lines(
    image: np.ndarray,
    scale: int,
    min_confidence: float,
    min_characters: int,
    flat: np.ndarray | None = None,
) -> list[tuple[TextBox, bool]]:
    """Boxes of the text lines holding a credible word (`min_characters` letters or digits,
    read at `min_confidence` or more), in the unscaled image's pixels, each with whether the
    line holds a readable word (3 or more, at confidence >= 60). With `flat` (the grey
    frame), a weaker word counts too where the frame around it is flat: devices and screens
    print on a plain background, tesseract's weak "words" in tissue sit in texture."""
    import pytesseract
    from PIL import Image

    picture = Image.fromarray(image)
    if scale != 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.LANCZOS
        )
    try:
        data = pytesseract.image_to_data(
            picture,
            config=_SPARSE_TEXT,
            output_type=pytesseract.Output.DICT,
            timeout=_OCR_TIMEOUT_S,
        )
    except pytesseract.TesseractNotFoundError:
        raise QuarantineError(OCR_UNAVAILABLE, "tesseract is not on PATH") from None
    except pytesseract.TesseractError:
        raise QuarantineError(OCR_UNAVAILABLE, "tesseract failed (language data?)") from None
    except RuntimeError:  # pytesseract's timeout
        raise QuarantineError(OCR_UNAVAILABLE, "tesseract timed out") from None

    tallest = max(8, min(_MAX_TEXT_HEIGHT, image.shape[0] // 4))

    def box(i: int) -> TextBox:
        left, top = data["left"][i], data["top"][i]
        right, bottom = left + data["width"][i], top + data["height"][i]
        return TextBox(left // scale, top // scale, -(-right // scale), -(-bottom // scale))

    # Words by text line; a line holding a credible word is blanked from its first to its
    # last word of about that word's height (tesseract's own line box also takes in tall
    # "words" it reads in anatomy next to the text).
    lines: dict[tuple[int, int, int], list[tuple[TextBox, bool, bool]]] = {}
    for i, level in enumerate(data["level"]):
        if level != 5:
            continue
        word = str(data["text"][i]).strip()
        if not any(c.isalnum() for c in word) or data["height"][i] > tallest * scale:
            continue
        characters, confidence = sum(c.isalnum() for c in word), float(data["conf"][i])
        credible = characters >= min_characters and (
            confidence >= min_confidence
            or (flat is not None and confidence >= _WEAK_CONFIDENCE and _on_flat(flat, box(i)))
        )
        readable = characters >= _READABLE_CHARACTERS and confidence >= _READABLE_CONFIDENCE
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append((box(i), credible, readable))
    found: list[tuple[TextBox, bool]] = []
    for words in lines.values():
        heights = sorted(b.y1 - b.y0 for b, credible, _ in words if credible)
        if not heights:
            continue
        typical = heights[len(heights) // 2]
        alike = [b for b, _, _ in words if 0.6 * typical <= b.y1 - b.y0 <= 1.6 * typical]
        line = TextBox(
            min(b.x0 for b in alike),
            min(b.y0 for b in alike),
            max(b.x1 for b in alike),
            max(b.y1 for b in alike),
        )
        found.append((line, any(readable for _, _, readable in words)))
    return found


def _on_flat(grey: np.ndarray, box: TextBox) -> bool:
    """Whether the ring of pixels just outside `box` is nearly uniform."""
    pad = max(2, (box.y1 - box.y0) // 3)
    y0, y1 = max(0, box.y0 - pad), min(grey.shape[0], box.y1 + pad)
    x0, x1 = max(0, box.x0 - pad), min(grey.shape[1], box.x1 + pad)
    ring = grey[y0:y1, x0:x1].astype(np.float64)
    inner = np.zeros(ring.shape, dtype=bool)
    inner[box.y0 - y0 : box.y1 - y0, box.x0 - x0 : box.x1 - x0] = True
    values = ring[~inner]
    if values.size == 0:
        return False
    # Most of the ring near its median: a plain background, even where the strokes of the
    # neighbouring words reach into it; speckle and anatomy spread over many grey levels.
    near = np.abs(values - np.median(values)) <= _FLAT_SPREAD
    return float(near.mean()) >= _FLAT_SHARE


def find_text(grey: np.ndarray, *, readable_only: bool = False) -> list[TextBox]:
    """Regions of `grey` (one 8-bit frame) that hold text, margins included.

    `readable_only` keeps only words of 3 or more letters or digits, read at confidence >= 60
    or on a flat background: what the verifying pass looks for. Finding (not verifying) also
    takes the plain view's weaker 2-character words, so faint text is blanked too; on
    ultrasound tissue tesseract reads such weak "words" everywhere, which would refuse every
    real image if verification counted them."""
    rows, cols = grey.shape
    view = plain_view(grey)
    if readable_only:
        plain = _ocr_lines(
            view, _PLAIN_SCALE, _READABLE_CONFIDENCE, _READABLE_CHARACTERS, flat=grey
        )
    else:
        plain = _ocr_lines(view, _PLAIN_SCALE, _RAW_MIN_CONFIDENCE, _RAW_MIN_CHARACTERS, flat=grey)
    contrast = _ocr_lines(
        local_contrast_view(grey), _CONTRAST_SCALE, _READABLE_CONFIDENCE, _READABLE_CHARACTERS
    )
    # Only lines with a readable word are followed sideways: tesseract's weak "words" in
    # ultrasound tissue would otherwise grow along the speckle.
    found = [
        along_the_line(grey, b) if readable else b
        for b, readable in plain + contrast
        if b.x1 > b.x0 and b.y1 > b.y0
    ]
    grown = {b.grown(rows, cols) for b in found}
    return sorted(grown, key=lambda b: (b.y0, b.x0, b.y1, b.x1))


def along_the_line(grey: np.ndarray, box: TextBox) -> TextBox:
    """`box` widened to the characters on either side that tesseract left out of its words.

    tesseract often stops a word early ("1988-" of "1988-02-10") and drops the rest of the
    line. The box's own pixels say what its ink looks like (the side of the band's median the
    strokes are on, at least half as far as the farthest); the box grows sideways while such
    ink comes again within 0.8 of its height, by at most 6 heights a side."""
    band = grey[box.y0 : box.y1].astype(np.int16)
    inside = band[:, box.x0 : box.x1]
    background = int(np.median(inside))
    light = int(inside.max()) - background >= background - int(inside.min())
    distance = (band - background) if light else (background - band)
    reach = int(distance[:, box.x0 : box.x1].max())
    if reach < _MIN_INK_CONTRAST:
        return box
    inked: np.ndarray = np.asarray((distance >= reach // 2).any(axis=0))
    height = box.y1 - box.y0
    gap_limit, step_limit = max(2, int(0.8 * height)), 6 * height
    x0, x1 = box.x0, box.x1
    for direction in (1, -1):
        edge = x1 if direction == 1 else x0 - 1
        last, x = edge, edge
        while 0 <= x < grey.shape[1] and abs(x - edge) <= step_limit:
            if inked[x]:
                last = x
            elif abs(x - last) > gap_limit:
                break
            x += direction
        if direction == 1 and last >= x1:
            x1 = last + 1
        elif direction == -1 and last < x0:
            x0 = last
    return TextBox(x0, box.y0, x1, box.y1)


def blank(frame: np.ndarray, boxes: list[TextBox], fill: int | float) -> None:
    """Set every pixel (every sample) of `boxes` in `frame` to `fill`, in place."""
    for b in boxes:
        frame[b.y0 : b.y1, b.x0 : b.x1, ...] = fill


def _decoded(ds: Dataset) -> tuple[np.ndarray, str]:
    """All frames as (frames, rows, cols[, samples]) and the photometric interpretation they
    are in: YBR decodes to RGB (pydicom converts it) and palette colour is applied (so the
    blanked boxes and the verification see the colours a viewer shows)."""
    try:
        pixels = ds.pixel_array
    except Exception as err:  # any codec or attribute error: an object we cannot clean
        raise QuarantineError("pixel data cannot be cleaned", type(err).__name__) from None
    photometric = str(ds.get("PhotometricInterpretation", ""))
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        if pixels.dtype != np.uint8:  # 16-bit LUT entries: their high byte is the colour
            pixels = (pixels >> 8).astype(np.uint8)
        photometric, samples = "RGB", 3
    elif samples == 3:
        photometric = "RGB"
    elif photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise QuarantineError("pixel data cannot be cleaned", f"photometric {photometric}")
    if frames == 1:
        pixels = pixels[np.newaxis]
    return pixels, photometric


def clean_pixel_data(ds: Dataset) -> int:
    """Blank the burned-in text of every frame of `ds` in place and flag it clean; the number
    of regions blanked.

    When OCR finds nothing the pixel data stay as read (bytes and transfer syntax). When it
    blanks regions, the frames are written back uncompressed (Explicit VR Little Endian, by
    pydicom's `set_pixel_data`), never re-encoded: the verifying OCR pass then reads exactly
    the pixels that are written, and a lossy source is not compressed a second time (its
    LossyImageCompression history is kept). Raises QuarantineError when OCR is unavailable,
    the pixels cannot be decoded, or text remains after blanking."""
    if not ocr_available():
        raise QuarantineError(OCR_UNAVAILABLE, "tesseract is not on PATH")
    if "PixelData" not in ds:
        ds.BurnedInAnnotation = "NO"
        return 0
    pixels, photometric = _decoded(ds)
    pixels = np.array(pixels)  # writable, whatever the decoder returned
    blanked = 0
    changed: list[int] = []
    for index, frame in enumerate(pixels):
        fill = frame.max() if photometric == "MONOCHROME1" else frame.min()
        boxes = find_text(grey_view(frame))
        rounds = 0
        while boxes:
            # Each blanking is followed by the verifying pass on the result. Once its
            # neighbours are gone tesseract often reads what it could not before, so what
            # that pass finds is blanked too, a few times; text still found then is refused.
            if rounds > _EXTRA_ROUNDS:
                raise QuarantineError(REDACTION_FAILED, f"frame {index + 1}")
            blank(frame, boxes, fill)
            blanked += len(boxes)
            boxes = find_text(grey_view(frame), readable_only=True)
            rounds += 1
        if rounds:
            changed.append(index)
    # A frame OCR found nothing in stays as it was, and reads the same the second time
    # (tesseract is deterministic): it needs no verifying pass of its own.
    if changed:
        _write_back(ds, pixels, photometric)
    ds.BurnedInAnnotation = "NO"
    return blanked


def verify_no_text(pixels: np.ndarray, frames: Iterable[int] | None = None) -> None:
    """Refuse `pixels` (frames, rows, cols[, samples]) when OCR reads text in any of `frames`
    (default: all), by the same two passes that found the text to blank."""
    for index in range(len(pixels)) if frames is None else frames:
        if find_text(grey_view(pixels[index]), readable_only=True):
            raise QuarantineError(REDACTION_FAILED, f"frame {index + 1}")


def _write_back(ds: Dataset, pixels: np.ndarray, photometric: str) -> None:
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        pixels = pixels[0]
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        for keyword in _PALETTE_ELEMENTS:
            if keyword in ds:
                delattr(ds, keyword)
    bits_stored = 8 if pixels.dtype == np.uint8 else int(ds.get("BitsStored", 16))
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == ExplicitVRBigEndian:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian  # pydicom writes no big-endian pixels
    try:
        # The instance keeps its SOP Instance UID: de-identification maps it like every UID.
        ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    except (ValueError, NotImplementedError) as err:
        raise QuarantineError("pixel data cannot be cleaned", type(err).__name__) from None
