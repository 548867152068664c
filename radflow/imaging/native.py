"""Uncompressed pixel data read straight from the file, with the bits pydicom would give.

The header pass (pydicom, stopped before Pixel Data) leaves the file positioned at the Pixel
Data element. For the plain cases (little-endian native transfer syntax, one frame of 8- or
16-bit grayscale, a value of exactly the declared length) this module notes where the stored
values lie, so the pixel pass reads those bytes into a reused buffer instead of parsing the
file again with pydicom. Everything else returns None and is decoded by pydicom as before.

Hand-written because pydicom has no API that keeps the header pass's file position; what it
reproduces of pydicom's native decoder (dtype from Bits Allocated and Pixel Representation,
the shift that clears bits above Bits Stored) is the same numpy operations on the same bytes,
so the values are the same bits.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

Plane = npt.NDArray[np.float32]

# Transfer syntax -> implicit VR. Big endian, deflate and encapsulated syntaxes are not here.
_NATIVE = {ExplicitVRLittleEndian: False, ImplicitVRLittleEndian: True}
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_UNDEFINED = 0xFFFFFFFF
# slope 1 and an integral intercept this small: stored + intercept is an integer below 2**24,
# exact in float32, so float32 arithmetic gives the bits of today's float64 multiply-add.
_EXACT_INTERCEPT = 2**24 - 2**16


@dataclass(frozen=True)
class NativeLayout:
    """Where one frame's stored values lie in its file, and how pydicom would read them."""

    offset: int  # first byte of the Pixel Data value
    dtype: str  # numpy dtype of the stored values, little endian
    unused_bits: int  # Bits Allocated - Bits Stored, shifted away as pydicom does


def _int(ds: Dataset, keyword: str) -> int | None:
    """The element's value when it is present and a plain integer (as pydicom reads US)."""
    value = ds.get(keyword)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def native_layout(fp: BinaryIO, ds: Dataset) -> NativeLayout | None:
    """The layout of the frame whose Pixel Data element starts at `fp`'s position, when the
    plain read gives exactly pydicom's values; None for anything pydicom should decode.

    `ds` is the header pydicom parsed from `fp` with stop_before_pixels, which leaves `fp` at
    the start of the first pixel data element.
    """
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if syntax not in _NATIVE:
        return None
    implicit = _NATIVE[syntax]
    if ds.original_encoding != (implicit, True):
        return None  # pydicom found another encoding than the one declared
    allocated, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    representation = _int(ds, "PixelRepresentation")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or columns is None or rows <= 0 or columns <= 0:
        return None
    if allocated not in (8, 16) or stored is None or not 1 <= stored <= allocated:
        return None
    if representation not in (0, 1) or _int(ds, "SamplesPerPixel") != 1:
        return None
    if ds.get("PhotometricInterpretation") != "MONOCHROME2" or "NumberOfFrames" in ds:
        return None  # MONOCHROME1 and multi-frame files: pydicom decodes them
    header = fp.read(12 if not implicit else 8)
    if len(header) < 8 or header[:4] != _PIXEL_DATA_TAG:
        return None  # Float Pixel Data, or no pixels at all
    if implicit:
        (length,) = struct.unpack("<I", header[4:8])
    else:
        if len(header) < 12 or header[4:6] not in (b"OB", b"OW") or header[6:8] != b"\0\0":
            return None
        (length,) = struct.unpack("<I", header[8:12])
    expected = rows * columns * allocated // 8
    if length == _UNDEFINED or length != expected or length % 2:
        return None  # encapsulated, padded or short: pydicom's rules apply
    offset = fp.tell()
    fp.seek(0, 2)
    if fp.tell() < offset + length:
        return None  # truncated: pydicom says how
    dtype = f"{'<' if allocated > 8 else '|'}{'ui'[representation]}{allocated // 8}"
    return NativeLayout(offset, dtype, allocated - stored)


class NativeReader:
    """Reads frames' stored values into one reused buffer (one frame's bytes)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def stored(
        self, path: Path, layout: NativeLayout, size: tuple[int, int]
    ) -> npt.NDArray[np.integer] | None:
        """The frame's stored values as pydicom's native decoder gives them, valid until the
        next call; None when the file no longer holds them where its header said."""
        length = math.prod(size) * np.dtype(layout.dtype).itemsize
        if len(self._buffer) != length:
            self._buffer = bytearray(length)
        with path.open("rb") as f:
            f.seek(layout.offset)
            if f.readinto(self._buffer) != length:
                return None
        values: npt.NDArray[np.integer] = np.frombuffer(self._buffer, dtype=layout.dtype)
        values = values.reshape(size)
        if layout.unused_bits:
            # pydicom's correct_unused_bits: clears the bits above Bits Stored (unsigned) or
            # extends the sign from Bits Stored (signed), with the same two shifts.
            np.left_shift(values, layout.unused_bits, out=values)
            np.right_shift(values, layout.unused_bits, out=values)
        return values


def rescaled(
    stored: npt.NDArray[np.generic], slope: float, intercept: float, out: Plane | None = None
) -> Plane:
    """Stored values as real ones, in `out` if given: a float64 multiply-add, then float32, as
    pydicom's apply_modality_lut computes it; a float32 add where that gives the same bits."""
    if out is None:
        out = np.empty(stored.shape, dtype=np.float32)
    exact = (
        slope == 1.0
        and float(intercept).is_integer()
        and abs(intercept) <= _EXACT_INTERCEPT
        and stored.dtype.kind in "iu"
        and stored.dtype.itemsize <= 2
    )
    if exact:  # stored + intercept is an integer below 2**24: exact in float32 and float64
        np.add(stored, np.float32(intercept), out=out, dtype=np.float32)
    else:
        real = stored.astype(np.float64)
        real *= slope
        real += intercept
        out[...] = real  # the float64 -> float32 cast of astype(np.float32)
    return out
