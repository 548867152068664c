"""Read DICOM series into SimpleITK images with true LPS geometry.

Geometry comes from the headers alone, frame by frame: ImagePositionPatient (or the Plane
Position functional group of an enhanced multi-frame file, or GridFrameOffsetVector),
sorted along the slice normal, never by InstanceNumber or file name. Each file is parsed
once: the header pass notes where a plain uncompressed frame's values lie, and those bytes
are read straight into a reused buffer (`radflow.imaging.native`). Everything else comes
from pydicom, which decodes JPEG, JPEG-LS, JPEG 2000 and RLE through the pylibjpeg plugins;
a large compressed series is decoded on worker processes (the decoders hold the GIL). Frames
go one at a time into a single float32 volume with each frame's own rescale applied, in the
same arithmetic whichever way they were read.

A stack that is sheared (gantry tilt) or unevenly spaced is resampled onto a regular,
orthogonal grid, with a warning; one with a hole or with two slices at one position is
quarantined, since interpolating across a hole would invent anatomy.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pydicom
import SimpleITK as sitk
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array
from pydicom.uid import UID, JPEG2000TransferSyntaxes

from radflow.errors import QuarantineError, too_many_voxels
from radflow.imaging.native import NativeLayout, NativeReader, native_layout, rescaled
from radflow.limits import DEFAULT_MAX_SERIES_VOXELS

Vector = npt.NDArray[np.float64]
Plane = npt.NDArray[np.float32]
Orientation = tuple[float, ...]  # ImageOrientationPatient's 6 direction cosines
Point = tuple[float, float, float]
# What must agree across a series' files: orientation, Rows x Columns, pixel spacing.
Signature = tuple[Orientation | None, tuple[int, int], tuple[float, float] | None]

TILT_DEGREES = 0.1  # slice positions further than this off the normal make a sheared stack
# PS3.3 C.7.6.3.1.2's defined terms of Photometric Interpretation.
_PHOTOMETRIC_TERMS = frozenset(
    (
        *("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "XYB"),
        *("YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"),
    )
)
UNIFORM = 0.01  # gaps within 1 % of the median gap are one regular spacing
HOLE = 1.5  # a gap over 1.5 median gaps is a missing slice, not uneven spacing
SAME_POSITION_MM = 1e-3  # DS strings carry about this much precision
SAME_COSINE = 1e-4  # orientations whose direction cosines agree this well are one
SAME_SPACING_MM = 1e-4
ORTHOGONAL = 1e-3  # |row . column| above this is not an orientation at all
PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# By default, worker processes decode a series of this many JPEG 2000 frames or more (40-60
# ms a 512 x 512 frame here); starting them costs 1-3 s here, once per process (they stay up
# 5 minutes). Other syntaxes decode in this process unless asked: an RLE frame takes about
# 1.4 ms, about what sending it back from a worker costs.
POOL_MIN_FRAMES = 64
POOL_MAX_WORKERS = 8
_POOLED_SYNTAXES = frozenset(JPEG2000TransferSyntaxes)


@dataclass(frozen=True)
class _Frame:
    """One 2-D frame: where it lies and how its stored values become real ones."""

    path: Path
    index: int  # frame number within its file, 0 for a single-frame file
    position: tuple[float, float, float]  # ImagePositionPatient of the first pixel, mm
    orientation: Orientation  # ImageOrientationPatient: row direction, then column direction
    pixel_spacing: tuple[float, float]  # DICOM order: between rows, between columns
    size: tuple[int, int]  # rows, columns
    slope: float
    intercept: float
    native: NativeLayout | None = None  # where its stored values lie, when read directly
    syntax: str = ""  # the file's transfer syntax UID

    @property
    def compressed(self) -> bool:
        """Encapsulated pixel data, decoded by pydicom's plugins (in workers, if any)."""
        syntax = UID(self.syntax)  # "" or an unknown UID: pydicom's decoder refuses it here
        return bool(syntax.is_transfer_syntax and syntax.is_encapsulated)


@dataclass(frozen=True)
class _Step:
    """How output slice j is made: (1 - weight) * below + weight * above, shifted in-plane."""

    below: int
    above: int
    weight: float
    shift: tuple[float, float]  # where the frames' first pixel lies on the output grid, mm


@dataclass(frozen=True)
class SeriesPlan:
    """What reading a series gives, worked out from its headers without decoding pixels."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 numbers, row-major; columns: row, column, normal (LPS)
    modality: str
    series_number: int | None
    files: int
    frames: int
    warnings: tuple[str, ...]
    slices: tuple[_Frame, ...] = field(repr=False)  # sorted along the normal
    steps: tuple[_Step, ...] = field(repr=False)  # one per output slice


# --------------------------------------------------------------------------- public API


def read_series(
    paths: Sequence[Path],
    max_voxels: int = DEFAULT_MAX_SERIES_VOXELS,
    *,
    decode_workers: int | None = None,
) -> sitk.Image:
    """One series as a float32 image in LPS with rescale applied (warnings dropped)."""
    image, _ = read_series_with_warnings(paths, max_voxels, decode_workers=decode_workers)
    return image


def read_series_with_warnings(
    paths: Sequence[Path],
    max_voxels: int = DEFAULT_MAX_SERIES_VOXELS,
    *,
    decode_workers: int | None = None,
) -> tuple[sitk.Image, list[str]]:
    """One series as a float32 LPS image, and what was done to make its grid regular.

    `decode_workers` processes decode compressed frames; None chooses: one per CPU (at most
    POOL_MAX_WORKERS) for a series of POOL_MIN_FRAMES JPEG 2000 frames or more, else none.
    Below 2 (or inside a daemonic process, which may not start children) frames are decoded
    in this process. The image is the same either way.
    """
    ahead = _Allocation.for_stack(paths, max_voxels)
    try:
        plan = plan_series(paths, max_voxels)
    finally:
        image = ahead.take() if ahead is not None else None
    if image is not None and tuple(image.GetSize()) != plan.size:
        image = None  # not a plain stack of single frames: its own grid is allocated
    return _fill(plan, _workers(plan, decode_workers), image), list(plan.warnings)


def read_planned(
    plan: SeriesPlan, *, decode_workers: int | None = None
) -> tuple[sitk.Image, list[str]]:
    """`read_series_with_warnings` of a series already planned (`plan_series`)."""
    return _fill(plan, _workers(plan, decode_workers)), list(plan.warnings)


class _Allocation:
    """The float32 image of a stack of single frames, allocated on a thread while the
    headers are parsed.

    SimpleITK zero-fills a new image (0.12-0.2 s for 512 x 512 x 300 here, a sixth of the
    whole read) without holding the GIL, so it overlaps with pydicom's header pass, which
    holds it. The size is guessed from the first header (its Rows x Columns, one slice per
    file) within the same bound as the declared-size check; a plan with another grid
    allocates its own, after this one is dropped, so memory stays one volume.
    """

    def __init__(self, size: tuple[int, int, int]) -> None:
        self._image: sitk.Image | None = None
        self._thread = threading.Thread(target=self._allocate, args=(size,), daemon=True)
        self._thread.start()

    @classmethod
    def for_stack(cls, paths: Sequence[Path], max_voxels: int) -> _Allocation | None:
        if len(paths) < 2:
            return None
        try:  # one file's header read twice, of hundreds; a bad file is the plan's to name
            ds, _ = _header(Path(paths[0]))
            rows, columns = int(ds.Rows), int(ds.Columns)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
        except Exception:
            return None
        if frames != 1 or not 0 < rows * columns * len(paths) <= max_voxels:
            return None
        return cls((columns, rows, len(paths)))

    def _allocate(self, size: tuple[int, int, int]) -> None:
        try:
            self._image = sitk.Image(list(size), sitk.sitkFloat32)
        except Exception:  # e.g. out of memory: `_fill` allocates, and says so, itself
            self._image = None

    def take(self) -> sitk.Image | None:
        self._thread.join()
        image, self._image = self._image, None
        return image


def plan_series(paths: Sequence[Path], max_voxels: int = DEFAULT_MAX_SERIES_VOXELS) -> SeriesPlan:
    """Geometry, sort order and resampling of one series, from its headers alone.

    Raises QuarantineError when the files are not one consistent, complete image series, or
    when they declare (or their regular grid would need) more than `max_voxels` voxels: the
    volume is allocated only after this, so a forged header cannot exhaust memory.
    """
    return plan_series_with_headers(paths, max_voxels)[0]


def plan_series_with_headers(
    paths: Sequence[Path], max_voxels: int = DEFAULT_MAX_SERIES_VOXELS
) -> tuple[SeriesPlan, list[Dataset]]:
    """`plan_series`, and each file's header (in `paths`' order) for a caller that needs
    more of them than the plan keeps, without parsing the files again."""
    if not paths:
        raise QuarantineError("empty series")
    frames: list[_Frame] = []
    headers: list[Dataset] = []
    series: set[str] = set()
    first: Dataset | None = None
    declared = 0
    for path in paths:
        ds, layout = _header(Path(path))
        headers.append(ds)
        series.add(str(ds.get("SeriesInstanceUID", "")))
        rows, columns = _check_image(ds)
        declared += rows * columns * _integer(ds, "NumberOfFrames", 1)
        if declared > max_voxels:  # before the frames' geometry: that list grows per frame
            raise too_many_voxels(declared, max_voxels)
        frames.extend(_frames(Path(path), ds, layout))
        if first is None:
            first = ds  # for what the series shares: modality, number, slice thickness
    assert first is not None
    if len(series) > 1:
        raise QuarantineError("several series", f"files of {len(series)} series in one read")
    _check_consistent([(f.orientation, f.size, f.pixel_spacing) for f in frames], "frame")
    plan = _plan(frames, first, len(paths))
    if (grid := math.prod(plan.size)) > max_voxels:  # a sheared stack's grid is wider
        raise too_many_voxels(grid, max_voxels, "in the regular grid")
    return plan, headers


def split_series(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """DICOM image files by SeriesInstanceUID, each series checked for consistency.

    Files that are not DICOM, or hold no image (DICOMDIR, reports, plans), belong to no
    series and are left out. A series whose files differ in orientation, Rows x Columns or
    pixel spacing is refused as an "inconsistent series" naming what differs.
    """
    grouped = _grouped(paths)
    for members in grouped.values():
        _check_consistent([signature for _, signature in members], "file")
    return {uid: [path for path, _ in members] for uid, members in grouped.items()}


def group_series(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """`split_series` without the consistency check, for tools that report series one by one."""
    return {uid: [path for path, _ in members] for uid, members in _grouped(paths).items()}


def slice_order(files: Sequence[Path]) -> list[Path]:
    """Files sorted along the slice normal by ImagePositionPatient (never by name or number)."""
    return list(dict.fromkeys(frame.path for frame in plan_series(files).slices))


# --------------------------------------------------------------------------- headers


@contextmanager
def _parsing() -> Iterator[None]:
    """Bytes pydicom cannot parse are quarantined, not raised.

    pydicom's messages can quote element values, so only the error's type is kept.
    """
    try:
        yield
    except InvalidDicomError:
        raise QuarantineError("not DICOM", "no DICOM preamble or file meta") from None
    except OSError:
        raise  # a missing or unreadable file is the caller's problem, not the data's
    except Exception as e:  # pydicom raises many types on malformed bytes
        raise QuarantineError("unreadable DICOM", type(e).__name__) from None


def _dataset(path: Path, *, pixels: bool = False) -> Dataset:
    """The file as pydicom parses it."""
    with _parsing():
        return pydicom.dcmread(path, stop_before_pixels=not pixels)


def _header(path: Path) -> tuple[Dataset, NativeLayout | None]:
    """The file's header, and where its pixel values lie when they can be read directly."""
    with path.open("rb") as f:
        with _parsing():
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        try:
            layout = native_layout(f, ds)
        except Exception:  # a malformed value: checked below, or left to pydicom's decoder
            layout = None
    return ds, layout


def _wrong_vr(source: Dataset, keyword: str) -> QuarantineError | None:
    """ "wrong VR" when the file gives `keyword` another VR than the dictionary's (explicit VR
    files carry their own): the value then cannot be what the attribute means."""
    expected = dictionary_VR(keyword)
    found = source[keyword].VR
    if found == expected or found in expected.split(" or "):
        return None
    return QuarantineError("wrong VR", f"{keyword} has VR {found}, not {expected}")


def _numbers(source: Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    """`count` finite numbers from `keyword`, None when absent or empty."""
    try:
        value = source.get(keyword)
        if value is None or value == "":
            return None
        items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        wrong = _wrong_vr(source, keyword)
        raise (wrong or QuarantineError("invalid geometry", f"{keyword} is not numeric")) from None
    if len(numbers) != count:
        raise QuarantineError("invalid geometry", f"{keyword} has {len(numbers)} values")
    if not all(math.isfinite(v) for v in numbers):
        raise QuarantineError("invalid geometry", f"{keyword} is not finite")
    return numbers


def _integer(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return default if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        wrong = _wrong_vr(ds, keyword)
        raise (wrong or QuarantineError("invalid header", f"{keyword} is not an integer")) from None


def _item(source: Dataset | None, sequence: str) -> Dataset | None:
    """The first item of `sequence` in `source`, if any."""
    if source is None or sequence not in source:
        return None
    items = source[sequence].value
    return items[0] if items else None


def _attribute(
    ds: Dataset, frame: Dataset | None, group: str, keyword: str, count: int
) -> tuple[float, ...] | None:
    """`keyword` from the frame's functional group, else the shared one, else the top level."""
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    for source in (_item(frame, group), _item(shared, group), ds):
        if source is not None and (found := _numbers(source, keyword, count)) is not None:
            return found
    return None


def _required(
    ds: Dataset, frame: Dataset | None, group: str, keyword: str, count: int
) -> tuple[float, ...]:
    found = _attribute(ds, frame, group, keyword, count)
    if found is None:
        raise QuarantineError("missing geometry", f"no {keyword}")
    return found


def _check_image(ds: Dataset) -> tuple[int, int]:
    """Rows and columns of a single-channel image; anything else is refused."""
    rows, columns = _integer(ds, "Rows", 0), _integer(ds, "Columns", 0)
    if rows <= 0 or columns <= 0:
        raise QuarantineError("not an image", "no Rows and Columns")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if _integer(ds, "SamplesPerPixel", 1) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        # Named only when it is one of the standard's terms: the detail reaches the lake.
        named = photometric if photometric in _PHOTOMETRIC_TERMS else "a value outside PS3.3"
        raise QuarantineError("not grayscale", f"PhotometricInterpretation {named}")
    if "ModalityLUTSequence" in ds:
        raise QuarantineError("unsupported modality LUT", "Modality LUT Sequence is not applied")
    return rows, columns


def _frame(
    path: Path, index: int, ds: Dataset, item: Dataset | None, size: tuple[int, int]
) -> _Frame:
    """Frame `index` of the file; `item` is its PerFrameFunctionalGroupsSequence item."""
    position = _required(ds, item, "PlanePositionSequence", "ImagePositionPatient", 3)
    orientation = _required(ds, item, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
    spacing = _required(ds, item, "PixelMeasuresSequence", "PixelSpacing", 2)
    if min(spacing) <= 0:
        raise QuarantineError("invalid geometry", "PixelSpacing is not positive")
    value = "PixelValueTransformationSequence"
    slope = _attribute(ds, item, value, "RescaleSlope", 1)
    intercept = _attribute(ds, item, value, "RescaleIntercept", 1)
    if slope is None:  # RT dose stores its scale under another name
        slope = _numbers(ds, "DoseGridScaling", 1)
    return _Frame(
        path,
        index,
        (position[0], position[1], position[2]),
        orientation,
        (spacing[0], spacing[1]),
        size,
        slope[0] if slope else 1.0,
        intercept[0] if intercept else 0.0,
    )


def _syntax(ds: Dataset) -> str:
    """The file's transfer syntax UID, "" when its file meta has none."""
    return str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID") or "")


def _frames(path: Path, ds: Dataset, layout: NativeLayout | None = None) -> list[_Frame]:
    """Every frame of one file, with its geometry and rescale; `layout` says where a
    single-frame file's stored values lie, when they can be read without pydicom."""
    size = _check_image(ds)
    count = _integer(ds, "NumberOfFrames", 1)
    if count < 1:
        raise QuarantineError("invalid header", "NumberOfFrames is below 1")
    syntax = _syntax(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:  # enhanced multi-frame: geometry and rescale per frame, or shared
        if len(per_frame) != count:
            raise QuarantineError(
                "invalid header", f"{len(per_frame)} per-frame groups, NumberOfFrames {count}"
            )
        return [
            replace(_frame(path, i, ds, item, size), syntax=syntax)
            for i, item in enumerate(per_frame)
        ]
    if count == 1:
        return [replace(_frame(path, 0, ds, None, size), native=layout, syntax=syntax)]
    # Legacy multi-frame (RT dose, some NM): frames step along the normal by these offsets,
    # relative to the first whichever convention (relative or absolute) the file follows.
    offsets = _numbers(ds, "GridFrameOffsetVector", count)
    if offsets is None:
        raise QuarantineError("missing geometry", "multi-frame file without frame positions")
    first = replace(_frame(path, 0, ds, None, size), syntax=syntax)
    normal = _axes(first.orientation)[2]
    start = np.array(first.position)
    return [
        replace(first, index=i, position=_point(start + (o - offsets[0]) * normal))
        for i, o in enumerate(offsets)
    ]


def _signature(ds: Dataset) -> Signature:
    """What must agree across a series' files, as far as the top-level header says."""
    frame = _item(ds, "PerFrameFunctionalGroupsSequence")
    iop = _attribute(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
    spacing = _attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing", 2)
    size = (_integer(ds, "Rows", 0), _integer(ds, "Columns", 0))
    return iop, size, None if spacing is None else (spacing[0], spacing[1])


def _grouped(paths: Iterable[Path]) -> dict[str, list[tuple[Path, Signature]]]:
    """Image files by SeriesInstanceUID, in SeriesNumber order, with what must agree."""
    groups: dict[str, list[tuple[Path, Signature]]] = {}
    numbers: dict[str, int] = {}
    for path in paths:
        try:
            ds = _dataset(Path(path))
        except QuarantineError as e:
            if e.reason == "not DICOM":
                continue  # a README or .DS_Store beside the slices is in no series
            raise
        if "Rows" not in ds:
            continue  # DICOMDIR, structured reports, RT plans: no image, no series
        uid = str(ds.get("SeriesInstanceUID", ""))
        groups.setdefault(uid, []).append((Path(path), _signature(ds)))
        numbers.setdefault(uid, _integer(ds, "SeriesNumber", 0))
    return {uid: groups[uid] for uid in sorted(groups, key=lambda u: (numbers[u], u))}


def _clusters(
    values: Sequence[tuple[float, ...]], tolerance: float
) -> list[tuple[tuple[float, ...], int]]:
    """Distinct values (equal within `tolerance` in every component) and how often each
    occurs, most common first: the majority, then the odd ones out."""
    found: list[tuple[float, ...]] = []
    counts: list[int] = []
    for value in values:
        for i, seen in enumerate(found):
            if max(abs(a - b) for a, b in zip(seen, value, strict=True)) <= tolerance:
                counts[i] += 1
                break
        else:
            found.append(value)
            counts.append(1)
    return sorted(zip(found, counts, strict=True), key=lambda c: (-c[1], c[0]))


def _check_consistent(items: Sequence[Signature], unit: str) -> None:
    """Refuse a series whose parts differ in orientation, size or pixel spacing."""
    differ = []
    for name, values, tolerance in (
        ("ImageOrientationPatient", [o for o, _, _ in items if o is not None], SAME_COSINE),
        ("Rows x Columns", [tuple(float(n) for n in s) for _, s, _ in items], 0.0),
        ("PixelSpacing", [p for _, _, p in items if p is not None], SAME_SPACING_MM),
    ):
        clusters = _clusters(values, tolerance)
        if len(clusters) > 1:
            counts = ", ".join(
                f"({' '.join(f'{x:.4g}' for x in v)}) in {n} {unit}{'s' * (n > 1)}"
                for v, n in clusters[:4]
            )
            differ.append(f"{name} differs: {counts}")
    if differ:
        raise QuarantineError("inconsistent series", "; ".join(differ))


# --------------------------------------------------------------------------- geometry


def _point(v: Vector) -> Point:
    return (float(v[0]), float(v[1]), float(v[2]))


def _axes(orientation: Orientation) -> tuple[Vector, Vector, Vector]:
    """Row, column and normal unit vectors; the column is made exactly orthogonal to the row
    (DS strings carry ~6 digits) so the direction matrix is a true rotation."""
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    if min(np.linalg.norm(row), np.linalg.norm(column)) < 0.5:
        raise QuarantineError("invalid geometry", "ImageOrientationPatient has a null direction")
    row = row / np.linalg.norm(row)
    column = column / np.linalg.norm(column)
    if abs(float(row @ column)) > ORTHOGONAL:
        raise QuarantineError("invalid geometry", "row and column directions are not orthogonal")
    if abs(float(row @ column)) > 0:
        column = column - (row @ column) * row
        column = column / np.linalg.norm(column)
    return row, column, np.cross(row, column)


def _depth_steps(depth: Vector, spacing: float, count: int) -> list[tuple[int, int, float]]:
    """For output slices at depth[0] + j * spacing: the frames around each, and the weight
    of the upper one (linear interpolation along the normal)."""
    steps = []
    for j in range(count):
        target = depth[0] + j * spacing
        k = int(np.clip(np.searchsorted(depth, target, side="right") - 1, 0, len(depth) - 2))
        w = float(np.clip((target - depth[k]) / (depth[k + 1] - depth[k]), 0.0, 1.0))
        if w < 1e-6:
            steps.append((k, k, 0.0))
        elif w > 1 - 1e-6:
            steps.append((k + 1, k + 1, 0.0))
        else:
            steps.append((k, k + 1, w))
    return steps


def _thickness(ds: Dataset) -> float:
    """Slice spacing of a lone slice: SpacingBetweenSlices, else SliceThickness, else 1 mm."""
    frame = _item(ds, "PerFrameFunctionalGroupsSequence")
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        found = _attribute(ds, frame, "PixelMeasuresSequence", keyword, 1)
        if found and found[0] != 0:
            return abs(found[0])  # some MR writes a negative spacing
    return 1.0


def _along_normal(depth: Vector) -> tuple[float, list[tuple[int, int, float]], list[str]]:
    """Slice spacing and per-slice interpolation steps from the sorted depths, or quarantine.

    Even gaps are kept as they are; uneven ones are resampled to the median gap; a hole
    (a gap over 1.5 median gaps) or a repeated position is refused.
    """
    gaps = np.diff(depth)
    if gaps.min() < SAME_POSITION_MM:
        repeated = int((gaps < SAME_POSITION_MM).sum())
        raise QuarantineError(
            "duplicate slice positions", f"{repeated} of {len(depth)} frames repeat a position"
        )
    median = float(np.median(gaps))
    if gaps.max() > HOLE * median:
        raise QuarantineError(
            "missing slices", f"gap of {gaps.max():.2f} mm where {median:.2f} mm is expected"
        )
    extent = float(depth[-1] - depth[0])
    if gaps.max() - gaps.min() <= UNIFORM * median:
        return extent / (len(depth) - 1), [(k, k, 0.0) for k in range(len(depth))], []
    count = math.floor(extent / median + 1e-6) + 1
    warning = (
        f"non-uniform slice spacing: gaps of {gaps.min():.3f} to {gaps.max():.3f} mm; "
        f"resampled to {median:.3f} mm"
    )
    return median, _depth_steps(depth, median, count), [warning]


def _drift(
    positions: Vector, row: Vector, column: Vector, extent: float
) -> tuple[Vector, list[str]]:
    """In-plane offset (mm, along row and column) of each sorted frame from the first.

    Zero unless the stack is sheared (gantry tilt): positions more than 0.1 degree off the
    normal. Then the frames are placed where they truly are on an orthogonal grid.
    """
    drift: Vector = (positions - positions[0]) @ np.stack([row, column]).T
    tilt = math.degrees(math.atan2(float(np.linalg.norm(drift[-1])), extent))
    if tilt <= TILT_DEGREES:
        return np.zeros_like(drift), []
    warning = (
        f"sheared slice stack (gantry tilt): slices lie {tilt:.2f} degrees off the slice "
        "normal; resampled onto an orthogonal grid"
    )
    return drift, [warning]


def _plan(frames: list[_Frame], first: Dataset, files: int) -> SeriesPlan:
    """Sort the frames along the normal, check their spacing, and lay out the output grid."""
    row, column, normal = _axes(frames[0].orientation)
    slices = sorted(frames, key=lambda f: float(np.array(f.position) @ normal))
    positions = np.array([f.position for f in slices])
    depth = positions @ normal
    rows, columns = slices[0].size
    pixel = np.array([slices[0].pixel_spacing[1], slices[0].pixel_spacing[0]])  # x, y
    if len(slices) == 1:  # one slice: its thickness is the best spacing there is
        spacing, steps, offsets = _thickness(first), [(0, 0, 0.0)], np.zeros((1, 2))
        warnings: list[str] = []
    else:
        offsets, warnings = _drift(positions, row, column, float(depth[-1] - depth[0]))
        spacing, steps, uneven = _along_normal(depth)
        warnings += uneven
    # The output grid starts and ends on whole pixels of the first frame, wide enough to
    # hold every frame: the first frame's pixels stay where they are.
    lo = np.floor(offsets.min(axis=0) / pixel + 1e-6).astype(int)
    hi = np.ceil(offsets.max(axis=0) / pixel - 1e-6).astype(int)
    start = lo * pixel
    origin = positions[0] + start[0] * row + start[1] * column if lo.any() else positions[0]
    plan_steps = []
    for k0, k1, w in steps:
        shift = (1 - w) * offsets[k0] + w * offsets[k1] - start
        plan_steps.append(_Step(k0, k1, w, (float(shift[0]), float(shift[1]))))
    return SeriesPlan(
        size=(columns + int(hi[0] - lo[0]), rows + int(hi[1] - lo[1]), len(plan_steps)),
        spacing=(float(pixel[0]), float(pixel[1]), float(spacing)),
        origin=_point(origin),
        direction=tuple(float(v) for v in np.column_stack([row, column, normal]).ravel()),
        modality=str(first.get("Modality", "")),
        series_number=_integer(first, "SeriesNumber", 0) or None,
        files=files,
        frames=len(frames),
        warnings=tuple(warnings),
        slices=tuple(slices),
        steps=tuple(plan_steps),
    )


# --------------------------------------------------------------------------- pixels


class _Pixels:
    """Decodes frames to float32 with rescale applied, one at a time.

    A frame whose stored values the header pass located is read straight from its file into
    a reused buffer. Any other goes through pydicom; the last file stays parsed, so the
    frames of a multi-frame file are decoded without re-reading it, and a single-frame
    series holds one slice's file at a time.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self._ds: Dataset | None = None
        self._native = NativeReader()

    def __call__(self, frame: _Frame, out: Plane | None = None) -> Plane:
        """The frame's real values, written into `out` when given."""
        if frame.native is not None:
            stored = self._native.stored(frame.path, frame.native, frame.size)
            if stored is not None:
                return rescaled(stored, frame.slope, frame.intercept, out)
            # The file changed since its header was read: pydicom says what it holds now.
        return rescaled(self._decoded(frame), frame.slope, frame.intercept, out)

    def _decoded(self, frame: _Frame) -> npt.NDArray[np.generic]:
        if frame.path != self._path:
            self._ds = None  # let the previous file go before reading the next
            self._ds = _dataset(frame.path, pixels=True)
            self._path = frame.path
        ds = self._ds
        assert ds is not None
        if not any(keyword in ds for keyword in PIXEL_DATA):
            raise QuarantineError("not an image", "no pixel data")
        try:
            stored: npt.NDArray[np.generic] = pixel_array(ds, index=frame.index)
        except Exception as e:  # decoder plugins raise anything; only the type is PHI-safe
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = syntax.name if syntax is not None else "no transfer syntax"
            raise QuarantineError("undecodable pixel data", f"{name}: {type(e).__name__}") from None
        if stored.shape != frame.size:
            raise QuarantineError(
                "undecodable pixel data", f"a frame of shape {stored.shape}, not {frame.size}"
            )
        return stored


_worker_pixels: _Pixels | None = None  # a decoding worker process's own decoder


def _decode_in_worker(frame: _Frame) -> npt.NDArray[np.generic]:
    """One frame's stored values, decoded in a worker process exactly as `_Pixels` decodes
    them here (the parent rescales them: half the bytes to send back for 16-bit data)."""
    global _worker_pixels
    if _worker_pixels is None:
        _worker_pixels = _Pixels()
    return _worker_pixels._decoded(frame)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def _workers(plan: SeriesPlan, requested: int | None) -> int:
    """How many worker processes decode the plan's compressed frames; 0: this process."""
    compressed = sum(frame.compressed for frame in plan.slices)
    if requested is None:
        slow = sum(frame.syntax in _POOLED_SYNTAXES for frame in plan.slices)
        requested = min(_cpus(), POOL_MAX_WORKERS) if slow >= POOL_MIN_FRAMES else 0
    if requested < 2 or not compressed or multiprocessing.current_process().daemon:
        return 0  # a daemonic process (a Dask worker's) may not start children
    return min(requested, compressed)


class _Pool:
    """Compressed frames decoded ahead on worker processes, handed out in the order they
    are asked for; frames read directly are decoded here when asked for.

    pydicom's decoder plugins hold the GIL, so only processes decode in parallel. joblib's
    loky workers are used because they do not re-run the caller's main module (spawned
    multiprocessing workers do, so an unguarded script would break), start by fork+exec (no
    inherited locks from the caller's threads), and stay up a while to serve the next
    series. joblib queues two frames per worker and dispatches the next as each finishes;
    this process rescales each decoded frame as soon as it is asked for (far quicker than a
    decode), so only a few decoded frames wait at any time.
    """

    def __init__(self, frames: Iterable[_Frame], workers: int) -> None:
        from joblib import Parallel, delayed  # only for large compressed series

        self._here = _Pixels()
        compressed = [frame for frame in frames if frame.compressed]
        self._expected = iter(compressed)
        parallel = Parallel(
            n_jobs=workers, return_as="generator", pre_dispatch="2*n_jobs", batch_size=1
        )
        self._results: Iterator[npt.NDArray[np.generic]] = parallel(
            delayed(_decode_in_worker)(frame) for frame in compressed
        )

    def __call__(self, frame: _Frame, out: Plane | None = None) -> Plane:
        if not frame.compressed:
            return self._here(frame, out)
        expected = next(self._expected)
        assert expected is frame, "frames are asked for in the order they were submitted"
        return rescaled(next(self._results), frame.slope, frame.intercept, out)

    def close(self) -> None:
        """Stop dispatching: the frames not yet decoded are dropped (after an error)."""
        close = getattr(self._results, "close", None)
        if close is not None:
            close()


def _placed(plane: Plane, shift: tuple[float, float], plan: SeriesPlan, fill: float) -> Plane:
    """`plane` on the output grid, its first pixel `shift` mm from the grid's origin."""
    width, height = plan.size[0], plan.size[1]
    if plane.shape == (height, width) and max(abs(shift[0]), abs(shift[1])) < 1e-9:
        return plane
    spacing = plan.spacing[:2]
    image = sitk.GetImageFromArray(plane)
    image.SetSpacing(spacing)
    image.SetOrigin(shift)
    out = sitk.Resample(
        image, (width, height), sitk.Transform(), sitk.sitkLinear, (0.0, 0.0), spacing,
        (1.0, 0.0, 0.0, 1.0), fill, sitk.sitkFloat32,
    )  # fmt: skip
    placed: Plane = sitk.GetArrayFromImage(out)
    return placed


def _order(plan: SeriesPlan) -> list[_Frame]:
    """The frames in the order `_planes` decodes them, each once."""
    needed = dict.fromkeys(k for step in plan.steps for k in (step.below, step.above))
    return [plan.slices[k] for k in needed]


class _Decode(Protocol):
    def __call__(self, frame: _Frame, out: Plane | None = None) -> Plane: ...


def _as_read(plan: SeriesPlan) -> bool:
    """Whether output slice j is frame j as it is (a regular stack): no interpolation, no
    in-plane shift, the grid's size."""
    width, height = plan.size[:2]
    return len(plan.steps) == len(plan.slices) and all(
        step.below == step.above == j
        and not step.weight
        and max(abs(step.shift[0]), abs(step.shift[1])) < 1e-9
        and plan.slices[j].size == (height, width)
        for j, step in enumerate(plan.steps)
    )


def _planes(plan: SeriesPlan, decode: _Decode) -> Iterator[Plane]:
    """The output slices in order, each from at most two neighbouring frames.

    Frames are needed in increasing order, so only the two in use are held at a time.
    """
    fill = -1000.0 if plan.modality == "CT" else 0.0  # air, as preprocess pads; else zero
    held: dict[int, Plane] = {}
    for step in plan.steps:
        for k in [k for k in held if k < step.below]:
            del held[k]
        for k in dict.fromkeys((step.below, step.above)):
            if k not in held:
                held[k] = decode(plan.slices[k])
        plane = _placed(held[step.below], step.shift, plan, fill)
        if step.weight:
            upper = _placed(held[step.above], step.shift, plan, fill)
            # plane + w (upper - plane): where both are padding it stays exactly padding.
            plane = plane + np.float32(step.weight) * (upper - plane)
        yield plane


def _writable(image: sitk.Image) -> npt.NDArray[np.float32]:
    """A writable (z, y, x) numpy view of a new float32 image's own buffer.

    SimpleITK hands out read-only views only, since an image may share its buffer with its
    copies. This image was just made here and GetArrayViewFromImage makes its buffer unique,
    so nothing else sees the writes; `_fill` drops the view before it returns the image.
    Writing the slices in place spares a copy per slice and a paste per block (a quarter of
    the reader's time on a 512 x 512 x 300 series) and any memory beyond the volume.
    """
    view = sitk.GetArrayViewFromImage(image)
    buffer = (ctypes.c_float * view.size).from_address(view.__array_interface__["data"][0])
    volume: npt.NDArray[np.float32] = np.ctypeslib.as_array(buffer).reshape(view.shape)
    return volume


def _fill(plan: SeriesPlan, workers: int = 0, image: sitk.Image | None = None) -> sitk.Image:
    """Decode the series into one float32 volume, on `workers` processes if any, into
    `image` when given (a new float32 image of the plan's size, see `_Allocation`).

    Slices are written straight into the image, so memory stays one volume (and, with
    workers, the few decoded frames waiting to be taken).
    """
    if image is None:
        image = sitk.Image(list(plan.size), sitk.sitkFloat32)
    volume = _writable(image)
    pool = _Pool(_order(plan), workers) if workers else None
    decode = pool or _Pixels()
    try:
        if _as_read(plan):  # a regular stack: each frame decoded straight into its place
            for frame, plane in zip(plan.slices, volume, strict=True):
                decode(frame, plane)
        else:
            for plane, real in zip(volume, _planes(plan, decode), strict=True):
                plane[...] = real
    finally:
        del volume
        if pool is not None:
            pool.close()
    image.SetOrigin(plan.origin)
    image.SetSpacing(plan.spacing)
    image.SetDirection(plan.direction)
    return image
