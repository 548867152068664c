"""Burned-in text under the Clean Pixel Data option: detection, residual text, false redaction.

Usage: python bench/burned_in_bench.py [--seed 1] [--ultrasound 12] [--screenshots 12]
       [--plain 4] [--lung1 tests/.data/pyradiomics/lung1_image.nrrd]

Corpus (tests/support/burned_in.py, seeded; the detector's settings were chosen on seed 0, so
the default seed 1 is held out):

- text: ultrasound-like grey images (a speckled fan, 320x240 and 400x300) with a name, an ID,
  a birth date and an exam date in DejaVu Sans / Serif / Mono / Sans Bold at 10-32 px and
  high (255), medium (170) and low (105) grey levels over a dark frame, the date sometimes
  over the speckle; screenshot-like RGB images (UI-grey panels, a title bar, a gradient
  viewport, 400x300 and 480x360) with the same kinds of strings light on dark, dark on grey,
  faint grey on grey (120 on about 180) and light over the gradient. Written as Ultrasound and
  Secondary Capture DICOM (BurnedInAnnotation YES) and de-identified by `Deidentifier` with
  `clean_pixel_data`.
- text-free: speckled fans without text, and real images nobody here drew (pydicom's CT_small,
  MR_small and the 10-frame emri_small, flagged YES so they are read), plus, when
  `make test-data` has fetched them, three axial slices of pyradiomics' lung1 CT.
- real ultrasound with real burned-in text (pydicom's US1_UNCR, OBXXXX1A, gdcm-US-ALOKA-16):
  no ground truth; the independent OCR's readable words before and after are reported.

Figures:
- detection: the share of rendered strings whose every glyph pixel (>= 99 %) holds the fill
  value in the output (measured on the first pass's output for refused objects too);
- residual: the share of released objects in which any PHI string is still readable by an
  independent check: a different OCR setting (`--psm 3`, 3x upscale, the grey view and its
  inverse) reads a token of 5+ letters or digits of a rendered string, OR a string's glyphs
  are not (>= 99 %) blanked;
- false redaction: for text-free images, the share with any pixel changed, and the mean
  share of pixels changed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytesseract
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, UltrasoundImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.burned_in import (
    Sample,
    dicom_image,
    text_corpus,
    text_free_ultrasound,
)

from radflow.dicom.burned_in import find_text, grey_view
from radflow.dicom.deid import DeidConfig, Deidentifier
from radflow.errors import QuarantineError

SECRET = b"burned-in-bench-secret-0123456789"
REAL_US = ("US1_UNCR.dcm", "OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm")
REAL_PLAIN = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")
LUNG1 = Path(__file__).resolve().parents[1] / "tests" / ".data" / "pyradiomics" / "lung1_image.nrrd"


@dataclass
class Outcome:
    released: bool
    reason: str
    pixels: np.ndarray  # (frames, rows, cols[, 3]) as written, or the input when refused
    seconds: float


def _frames(ds: Dataset) -> np.ndarray:
    arr = ds.pixel_array
    return arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[np.newaxis]


def deidentify(ds: Dataset) -> Outcome:
    deid = Deidentifier(DeidConfig(secret=SECRET, options=frozenset({"clean_pixel_data"})))
    start = time.perf_counter()
    try:
        deid(ds)
    except QuarantineError as err:
        return Outcome(False, err.reason, np.empty(0), time.perf_counter() - start)
    return Outcome(True, "", _frames(ds), time.perf_counter() - start)


def independent_words(frame: np.ndarray) -> list[str]:
    """What a second, differently set OCR reads: page segmentation by tesseract's default
    (`--psm 3`), 3x upscaled, on the grey view and on its inverse; words of 4+ characters."""
    grey = grey_view(frame)
    words: list[str] = []
    for image in (grey, 255 - grey):
        big = Image.fromarray(image).resize(
            (image.shape[1] * 3, image.shape[0] * 3), Image.Resampling.LANCZOS
        )
        text = pytesseract.image_to_string(big, config="--psm 3")
        words += [w for w in re.split(r"\s+", text) if sum(c.isalnum() for c in w) >= 4]
    return words


def _alnum(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def readable(phi: list[str], words: list[str]) -> list[str]:
    """PHI tokens (5+ letters or digits, split at spaces and ^) found in the OCR's words."""
    seen = _alnum("".join(words))
    tokens = {_alnum(t) for text in phi for t in re.split(r"[ ^]", text)}
    return sorted(t for t in tokens if len(t) >= 5 and t in seen)


def blanked_share(frame: np.ndarray, sample: Sample, index: int) -> float:
    fill = frame.min()
    glyphs = sample.texts[index].glyphs(frame.shape[0], frame.shape[1])
    values = frame[glyphs]
    done = (values == fill).all(axis=-1) if values.ndim == 2 else values == fill
    return float(done.mean())


def first_pass(pixels: np.ndarray) -> np.ndarray:
    """The first pass's output for a refused object (find and blank, no verification)."""
    out = pixels.copy()
    for box in find_text(grey_view(out)):
        out[box.y0 : box.y1, box.x0 : box.x1, ...] = out.min()
    return out


def text_figures(samples: list[Sample]) -> list[str]:
    rows = []
    strings = detected = released = residual_ocr = residual_px = residual = 0
    seconds = 0.0
    by_kind: dict[str, list[int]] = {}
    for sample in samples:
        rgb = sample.pixels.ndim == 3
        ds = dicom_image(
            sample.pixels, SecondaryCaptureImageStorage if rgb else UltrasoundImageStorage
        )
        outcome = deidentify(ds)
        seconds += outcome.seconds
        frame = outcome.pixels[0] if outcome.released else first_pass(sample.pixels)
        shares = [blanked_share(frame, sample, i) for i in range(len(sample.texts))]
        found = sum(s >= 0.99 for s in shares)
        strings += len(shares)
        detected += found
        kind = by_kind.setdefault(sample.kind, [0, 0])
        kind[0] += found
        kind[1] += len(shares)
        note = ""
        if outcome.released:
            released += 1
            leaked = readable(sample.phi, independent_words(frame))
            missed = [t.text for t, s in zip(sample.texts, shares, strict=True) if s < 0.99]
            residual_ocr += bool(leaked)
            residual_px += bool(missed)
            residual += bool(leaked or missed)
            if leaked or missed:
                note = f"OCR reads {len(leaked)} token(s); {len(missed)} string(s) not blanked"
        else:
            note = f"refused: {outcome.reason}"
        rows.append(
            f"| {sample.name} | {found}/{len(shares)} | "
            f"{'released' if outcome.released else 'quarantined'} | {outcome.seconds:.1f} | "
            f"{note} |"
        )
    out = [
        f"Text images: {len(samples)}, rendered strings: {strings}, "
        f"OCR time {seconds:.0f} s ({seconds / len(samples):.2f} s per image).",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| detection (strings blanked >= 99 %) | {detected}/{strings} = "
        f"{detected / strings:.1%} |",
    ]
    for kind, (found, total) in sorted(by_kind.items()):
        out.append(f"| detection, {kind} | {found}/{total} = {found / total:.1%} |")
    out += [
        f"| released (verified) | {released}/{len(samples)} |",
        f"| quarantined by the verifying pass | {len(samples) - released}/{len(samples)} |",
        f"| residual: released objects with PHI readable or not blanked | {residual}/"
        f"{released} = {residual / max(1, released):.1%} |",
        f"| ... of which the independent OCR reads a PHI token | {residual_ocr}/{released} |",
        f"| ... of which a string's glyphs are not all blanked | {residual_px}/{released} |",
        f"| residual over all objects (a refused object leaks nothing) | {residual}/"
        f"{len(samples)} = {residual / len(samples):.1%} |",
        "",
        "| image | strings blanked | outcome | s | note |",
        "| --- | ---: | --- | ---: | --- |",
        *rows,
    ]
    return out


def _plain_cases(seed: int, count: int, lung1: Path) -> list[tuple[str, Dataset]]:
    cases = [
        (s.name + " (synthetic fan)", dicom_image(s.pixels, UltrasoundImageStorage))
        for s in text_free_ultrasound(seed, count)
    ]
    for name in REAL_PLAIN:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(get_testdata_file(name))
        ds.BurnedInAnnotation = "YES"
        cases.append((name + " (pydicom)", ds))
    if lung1.exists():
        import SimpleITK as sitk

        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(lung1)))
        for z in np.linspace(volume.shape[0] * 0.3, volume.shape[0] * 0.7, 3).astype(int):
            ct = dicom_image(np.zeros((4, 4), np.uint8))
            ct.set_pixel_data(
                volume[z].astype(np.int16), "MONOCHROME2", 16, generate_instance_uid=False
            )
            cases.append((f"lung1 slice {z} (pyradiomics)", ct))
    return cases


def plain_figures(seed: int, count: int, lung1: Path) -> list[str]:
    rows = []
    changed_images = 0
    shares = []
    refused = 0
    for name, ds in _plain_cases(seed, count, lung1):
        before = _frames(ds).copy()
        outcome = deidentify(ds)
        if not outcome.released:
            refused += 1
            rows.append(f"| {name} | quarantined ({outcome.reason}) | | {outcome.seconds:.1f} |")
            continue
        after = outcome.pixels
        changed = (after != before) if after.shape == before.shape else np.ones(before.shape)
        share = float(changed.mean())
        shares.append(share)
        changed_images += share > 0
        rows.append(f"| {name} | released | {share:.2%} | {outcome.seconds:.1f} |")
    total = len(rows)
    return [
        "| figure | value |",
        "| --- | ---: |",
        f"| text-free images with any pixel changed | {changed_images}/{total} |",
        f"| mean share of pixels changed | {np.mean(shares) if shares else 0:.2%} |",
        f"| text-free images quarantined | {refused}/{total} |",
        "",
        "| image | outcome | pixels changed | s |",
        "| --- | --- | ---: | ---: |",
        *rows,
    ]


def real_us_figures() -> list[str]:
    rows = []
    for name in REAL_US:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(get_testdata_file(name))
        before_words = independent_words(_display(ds))
        outcome = deidentify(ds)
        if outcome.released:
            after_words = independent_words(outcome.pixels[0])
            rows.append(
                f"| {name} | released | {len(before_words)} | {len(after_words)}: "
                f"{' '.join(after_words)[:80]} | {outcome.seconds:.1f} |"
            )
        else:
            rows.append(
                f"| {name} | quarantined ({outcome.reason}) | {len(before_words)} | | "
                f"{outcome.seconds:.1f} |"
            )
    return [
        "| file | outcome | words read before | words read after | s |",
        "| --- | --- | ---: | --- | ---: |",
        *rows,
    ]


def _display(ds: Dataset) -> np.ndarray:
    from radflow.dicom.burned_in import _decoded

    return np.array(_decoded(ds)[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ultrasound", type=int, default=12)
    parser.add_argument("--screenshots", type=int, default=12)
    parser.add_argument("--plain", type=int, default=4)
    parser.add_argument("--lung1", type=Path, default=LUNG1, help="pyradiomics' lung1 CT")
    args = parser.parse_args()
    start = time.perf_counter()
    samples = text_corpus(args.seed, args.ultrasound, args.screenshots)
    lines = [
        f"### Text images (seed {args.seed})",
        "",
        *text_figures(samples),
        "",
        "### Text-free images (false redaction)",
        "",
        *plain_figures(args.seed, args.plain, args.lung1),
        "",
        "### Real ultrasound with real burned-in text (no ground truth)",
        "",
        *real_us_figures(),
        "",
        f"tesseract {pytesseract.get_tesseract_version()}; "
        f"total {time.perf_counter() - start:.0f} s",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
