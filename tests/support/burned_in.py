"""Images with burned-in PHI whose every glyph pixel is known, and images with no text at all.

For the Clean Pixel Data tests and `bench/burned_in_bench.py`. Seeded and deterministic: the
same seed gives the same pixels. Text is drawn with Pillow in the DejaVu fonts Debian ships
(fonts-dejavu-core), at several sizes and contrasts, over two kinds of background:

- ultrasound-like: a dark frame with a speckled fan (Rayleigh speckle, smoothed) and the
  device's header text above it (name, ID, date), grey levels, 8 bit;
- screenshot-like: UI-grey panels, a title bar, gradients and buttons, RGB.

Every rendered string records its box and its glyph mask (the pixels the text changed), so a
check can tell "the text was blanked" from "the OCR no longer reads it".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
SIZES = (10, 12, 14, 18, 24, 32)

_SURNAMES = ("DOE", "SMITH", "MUELLER", "GARCIA", "NGUYEN", "KOWALSKI", "OKAFOR", "LINDQVIST")
_GIVEN = ("JOHN", "ANNA", "PETER", "MARIA", "CHEN", "FATIMA", "LUKAS", "GRACE")


@dataclass(frozen=True)
class RenderedText:
    """One string drawn into an image: its box (x0, y0, x1, y1; x1/y1 exclusive) and the mask of
    the pixels it changed (box-sized, True on glyph pixels)."""

    text: str
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    font: str = ""
    size: int = 0
    contrast: str = ""

    def glyphs(self, rows: int, cols: int) -> np.ndarray:
        """The glyph mask in image coordinates."""
        full = np.zeros((rows, cols), dtype=bool)
        x0, y0, x1, y1 = self.box
        full[y0:y1, x0:x1] = self.mask
        return full


@dataclass
class Sample:
    """One image (rows, cols) grey or (rows, cols, 3) RGB, uint8, and the text drawn into it."""

    name: str
    kind: str  # "ultrasound", "screenshot" or "anatomy"
    pixels: np.ndarray = field(repr=False)
    texts: list[RenderedText] = field(default_factory=list)

    @property
    def phi(self) -> list[str]:
        return [t.text for t in self.texts]


def phi_strings(rng: np.random.Generator) -> list[str]:
    """A patient's name, ID and dates as devices print them."""
    surname, given = rng.choice(_SURNAMES), rng.choice(_GIVEN)
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=int(rng.integers(0, 30000)))
    exam = dt.date(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 2000)))
    return [
        f"{surname}^{given}",
        f"MRN {int(rng.integers(10**7, 10**8))}",
        f"DOB {birth:%Y-%m-%d}",
        f"{exam:%d/%m/%Y} {int(rng.integers(7, 19)):02d}:{int(rng.integers(0, 60)):02d}",
    ]


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), size)


def draw_text(
    pixels: np.ndarray,
    text: str,
    xy: tuple[int, int],
    face: str,
    size: int,
    value: int | tuple[int, int, int],
    contrast: str = "",
) -> RenderedText:
    """Draw `text` into `pixels` in place (antialiased, as screens and devices draw it) and
    return where it went. The mask holds the pixels whose value changed."""
    f = font(face, size)
    before = pixels.copy()
    image = Image.fromarray(pixels)
    ImageDraw.Draw(image).text(xy, text, font=f, fill=value)
    pixels[...] = np.asarray(image)
    changed = before != pixels
    if changed.ndim == 3:
        changed = changed.any(axis=2)
    ys, xs = np.nonzero(changed)
    if len(ys) == 0:
        raise ValueError("text drawn outside the image or in the background's own colour")
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    mask = changed[box[1] : box[3], box[0] : box[2]]
    return RenderedText(text, box, mask, face, size, contrast)


def ultrasound_background(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A dark frame with a speckled fan, as a B-mode ultrasound image looks (grey, uint8)."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    apex_y, apex_x = rows * 0.12, cols / 2
    radius = np.hypot(yy - apex_y, xx - apex_x)
    angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    half = rng.uniform(30, 42)
    fan = (np.abs(angle) < half) & (radius > rows * 0.08) & (radius < rows * 0.95)
    speckle = rng.rayleigh(1.0, (rows, cols))
    # Smooth the speckle a little along both axes (a 3x3 box): grains, not salt and pepper.
    padded = np.pad(speckle, 1, mode="edge")
    speckle = sum(padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3)) / 9
    depth = np.clip(1.1 - radius / rows, 0.2, 1.0)
    tissue = 40 + 55 * speckle * depth
    # A dark, round "cyst" and a brighter band, so the fan is not uniform.
    cy, cx = rows * rng.uniform(0.45, 0.7), cols * rng.uniform(0.4, 0.6)
    tissue[np.hypot(yy - cy, xx - cx) < rows * 0.07] *= 0.25
    band = np.abs(radius - rows * rng.uniform(0.3, 0.5)) < rows * 0.02
    tissue[band] *= 1.6
    out = np.where(fan, tissue, rng.normal(6, 2, (rows, cols)))
    return np.clip(out, 0, 255).astype(np.uint8)


def screenshot_background(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A UI screen: grey panels, a title bar, a gradient viewport and buttons (RGB, uint8)."""
    img = np.empty((rows, cols, 3), dtype=np.float64)
    img[...] = rng.uniform(200, 235)
    title = int(rows * 0.09)
    img[:title] = np.array([60, 70, 95]) + rng.uniform(-10, 10)
    side = int(cols * 0.28)
    img[title:, :side] = rng.uniform(170, 190)
    # The viewport: a dark vertical gradient with a soft blob, as a rendered image would be.
    yy, xx = np.mgrid[0 : rows - title, 0 : cols - side].astype(np.float64)
    gradient = 20 + 60 * yy / max(1, rows - title)
    blob = 90 * np.exp(-(((yy - yy.mean()) ** 2) + (xx - xx.mean()) ** 2) / (2 * (rows / 6) ** 2))
    img[title:, side:] = (gradient + blob)[..., None] * np.array([1.0, 0.95, 0.9])
    for k in range(3):  # buttons in the side panel
        y0 = title + int(rows * (0.55 + 0.12 * k))
        img[y0 : y0 + int(rows * 0.07), 8 : side - 8] = rng.uniform(120, 150)
    return np.clip(img, 0, 255).astype(np.uint8)


def _ultrasound(rng: np.random.Generator, index: int, rows: int, cols: int) -> Sample:
    pixels = ultrasound_background(rng, rows, cols)
    contrasts = {"high": 255, "medium": 170, "low": 105}
    contrast = list(contrasts)[index % 3]
    face = FONTS[index % len(FONTS)]
    size = SIZES[(index // 2) % len(SIZES)]
    texts = []
    y = 3
    strings = phi_strings(rng)
    for text in strings[:3]:
        if y + size > rows * 0.45:
            break
        texts.append(draw_text(pixels, text, (6, y), face, size, contrasts[contrast], contrast))
        y += int(size * 1.35)
    # The date at the top right corner, as most devices print it; at the bottom left where
    # the name leaves no room.
    width = font(face, size).getbbox(strings[3])[2]
    xy = (cols - width - 6, 3)
    if xy[0] < texts[0].box[2] + 12:
        xy = (6, rows - size - 8)
    texts.append(draw_text(pixels, strings[3], xy, face, size, contrasts[contrast], contrast))
    return Sample(f"us{index:02d}_{face[:-4]}_{size}px_{contrast}", "ultrasound", pixels, texts)


def _screenshot(rng: np.random.Generator, index: int, rows: int, cols: int) -> Sample:
    pixels = screenshot_background(rng, rows, cols)
    face = FONTS[(index + 1) % len(FONTS)]
    size = SIZES[(index // 2 + 1) % len(SIZES)]
    strings = phi_strings(rng)
    title = int(rows * 0.09)
    side = int(cols * 0.28)
    texts = []
    # Light text in the dark title bar, dark text on the grey panel, low contrast grey on grey,
    # and light text over the viewport's gradient.
    title_size = min(size, max(10, title - 4))
    texts.append(
        draw_text(
            pixels,
            strings[0],
            (8, (title - title_size) // 2),
            face,
            title_size,
            (235, 235, 235),
            "light on dark",
        )
    )
    y = title + 8
    for text, value, contrast in (
        (strings[1], (25, 25, 25), "dark on grey"),
        (strings[2], (120, 120, 120), "low"),
    ):
        if font(face, size).getbbox(text)[2] > side - 8:
            size_here = max(10, size * (side - 12) // font(face, size).getbbox(text)[2])
        else:
            size_here = size
        texts.append(draw_text(pixels, text, (6, y), face, size_here, value, contrast))
        y += int(size_here * 1.6)
    texts.append(
        draw_text(
            pixels,
            strings[3],
            (side + 8, title + 8),
            face,
            size,
            (230, 230, 200),
            "light on gradient",
        )
    )
    return Sample(f"sc{index:02d}_{face[:-4]}_{size}px", "screenshot", pixels, texts)


def text_corpus(seed: int = 0, ultrasound: int = 12, screenshots: int = 12) -> list[Sample]:
    """Images with rendered PHI: ultrasound-like (grey) and screenshot-like (RGB)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(ultrasound):
        rows, cols = (240, 320) if i % 2 else (300, 400)
        samples.append(_ultrasound(rng, i, rows, cols))
    for i in range(screenshots):
        rows, cols = (300, 400) if i % 2 else (360, 480)
        samples.append(_screenshot(rng, i, rows, cols))
    return samples


def text_free_ultrasound(seed: int = 0, count: int = 4) -> list[Sample]:
    """Speckled fans with no text at all: OCR sees shapes in speckle, redaction must not."""
    rng = np.random.default_rng(seed + 1000)
    return [
        Sample(f"us_plain{i:02d}", "anatomy", ultrasound_background(rng, 240, 320))
        for i in range(count)
    ]


# ------------------------------------------------------------------------------- DICOM


def dicom_image(
    pixels: np.ndarray,
    sop_class: str = UltrasoundImageStorage,
    burned_in: str | None = "YES",
    patient: str = "DOE^JOHN",
) -> Dataset:
    """A Part 10 dataset holding `pixels`: (rows, cols) grey or (rows, cols, 3) RGB, uint8,
    or (frames, rows, cols[, 3]) for a multi-frame class. Uncompressed, explicit VR LE."""
    multi = sop_class == UltrasoundMultiFrameImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = patient
    ds.PatientID = "12345678"
    ds.StudyDate = "20240105"
    ds.Modality = "US" if sop_class != SecondaryCaptureImageStorage else "OT"
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    rgb = pixels.shape[-1] == 3 and pixels.ndim == (4 if multi else 3)
    ds.set_pixel_data(pixels, "RGB" if rgb else "MONOCHROME2", 8, generate_instance_uid=False)
    if multi:
        ds.FrameTime = 40.0
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    return ds
