"""The extra series a real CT study holds, derived from the synthetic primary volume.

For `radflow.synth`'s opt-in realism: array functions (HU in, HU out) for a topogram-like
projection, coronal reformats, thicker axial recons and the lesion tidying that lets an
RTSTRUCT hold one closed contour per slice; and `write_extras`, which writes them (and the
SEG or RTSTRUCT) into a study with the primary's header. Arrays are (z, y, x) like the
primary's; z runs from the lowest slice up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from scipy import ndimage

from radflow.synth import (
    _PHYSICIANS,
    THICK_MM,
    LesionTruth,
    SynthSpec,
    _chance,
    _ds,
    _stored,
    _uid,
    _write_image,
)

Volume = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

# SeriesNumber of each opt-in series (1 and 2 are the primary and the post-contrast series).
NUMBERS = {"thick": 3, "coronal": 4, "localizer": 5, "seg": 6, "rtstruct": 7}
CORONAL = ["1", "0", "0", "0", "0", "-1"]  # rows along +x (L), columns down -z (to the feet)


def projection(vol: Volume) -> Volume:
    """An anterior-posterior projection (rows top to bottom = z high to low, columns = x).

    The mean HU along y stands for what a topogram shows (attenuation summed through the
    patient) and stays in the HU range, so it is stored like any CT image.
    """
    image: Volume = vol.mean(axis=1, dtype=np.float64)[::-1].astype(np.float32)
    return image


def coronal_planes(vol: Volume, planes: int) -> Volume:
    """`planes` coronal images evenly spanning y, each (z high to low, x), linear in y.

    With as many planes as the primary has rows, every plane is exactly a row of the primary
    (the weights are 0 and 1), so a reformat's pixels can be checked against the axial ones.
    """
    rows = vol.shape[1]
    at = np.linspace(0.0, rows - 1.0, planes)
    low = np.minimum(np.floor(at).astype(np.intp), rows - 2)
    weight = (at - low)[:, None, None].astype(np.float32)
    below = np.moveaxis(vol[:, low, :], 1, 0)
    above = np.moveaxis(vol[:, low + 1, :], 1, 0)
    stack: Volume = ((1 - weight) * below + weight * above)[:, ::-1, :]
    return stack


def thick_slabs(
    vol: Volume, spacing: float, thickness: float
) -> tuple[Volume, npt.NDArray[np.float64]]:
    """Axial slabs `thickness` mm thick centred in the primary's z range, and their z (mm from
    the centre, low to high): each slab is the primary's slices weighted by how many mm of
    each slice fall inside it, as a scanner's thicker reconstruction averages partial volume.
    """
    count = vol.shape[0]
    below = (np.arange(count) - (count - 1) / 2) * spacing
    slabs = int(((count - 1) * spacing) // thickness) + 1
    centres = ((np.arange(slabs) - (slabs - 1) / 2) * thickness).astype(np.float64)
    low = np.maximum(below[None, :] - spacing / 2, centres[:, None] - thickness / 2)
    high = np.minimum(below[None, :] + spacing / 2, centres[:, None] + thickness / 2)
    weights = np.clip(high - low, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    averaged: Volume = np.tensordot(weights, vol, axes=(1, 0)).astype(np.float32)
    return averaged, centres


def tidy_lesion(inside: Mask) -> Mask:
    """Each z slice of `inside` cut to its largest 4-connected piece with its holes filled.

    A lobulated lesion can show a small island or a pinhole on a slice; a structure set holds
    one closed planar contour per slice for it only when each slice is a single simple region.
    Filling the 4-connected holes also removes every corner-only touch of the piece with
    itself (each would enclose such a hole), so the outline is a simple polygon.
    """
    tidy = np.zeros_like(inside)
    for k, plane in enumerate(inside):
        pieces, count = ndimage.label(plane)  # the default structure is 4-connected in 2-D
        if count == 0:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        tidy[k] = ndimage.binary_fill_holes(pieces == 1 + int(np.argmax(sizes)))
    return tidy


def write_extras(
    spec: SynthSpec,
    index: int,
    extras: Sequence[str],
    study: Dataset,
    primary: Sequence[Path],
    vol: Volume,
    truth: LesionTruth,
    folder: Path,
) -> list[tuple[str, str, list[Path]]]:
    """Write study `index`'s opt-in series under `folder` (the accession's folder), each as
    `S<number>/IM<k>.dcm`, in the primary's frame of reference; (kind, SeriesInstanceUID,
    files) for each, in SeriesNumber order. `study` is the header every series shares."""
    family, given, _ = str(study.PatientName).split("^")
    start = dt.datetime.strptime(f"{study.StudyDate}{study.StudyTime}", "%Y%m%d%H%M%S")
    out: list[tuple[str, str, list[Path]]] = []
    for kind in extras:
        number = NUMBERS[kind]
        ds = Dataset()
        ds.update(study)
        ds.SeriesInstanceUID = _uid(spec, index, "series", number)
        ds.SeriesNumber = number
        ds.SeriesDate = study.StudyDate
        ds.SeriesTime = f"{start + dt.timedelta(minutes=4 * number):%H%M%S}"
        ds.SeriesDescription = f"{_DESCRIPTIONS[kind]} {family} {given}"  # PHI, as sites do
        here = folder / f"S{number}"
        here.mkdir(parents=True, exist_ok=True)
        if kind in ("seg", "rtstruct"):
            paths = [_annotation(spec, index, kind, ds, primary, truth, here / "IM0001.dcm")]
        else:
            write = {"thick": _thick, "coronal": _coronal, "localizer": _topogram}[kind]
            paths = write(spec, index, ds, vol, here)
        out.append((kind, str(ds.SeriesInstanceUID), paths))
    return out


_DESCRIPTIONS = {
    "thick": f"AXIAL {THICK_MM:g}MM",
    "coronal": "COR MPR",
    "localizer": "TOPOGRAM",
    "seg": "SEG LESION",
    "rtstruct": "RTSTRUCT LESION",
}


def _corner(spec: SynthSpec) -> tuple[float, float, float]:
    """The primary's lowest x, lowest y and highest z (mm): the volume is centred on 0."""
    ps, t = spec.pixel_spacing, spec.slice_thickness
    return (1 - spec.columns) * ps / 2, (1 - spec.rows) * ps / 2, (spec.slices - 1) * t / 2


def _thick(spec: SynthSpec, index: int, ds: Dataset, vol: Volume, here: Path) -> list[Path]:
    slabs, centres = thick_slabs(vol, spec.slice_thickness, THICK_MM)
    x0, y0, _ = _corner(spec)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(THICK_MM)
    paths = []
    for k, z in enumerate(centres):
        ds.SliceLocation = _ds(float(z))
        sop = _uid(spec, index, int(ds.SeriesNumber), k)
        paths.append(_write_image(here, ds, _stored(slabs[k]), k, sop, (x0, y0, float(z))))
    return paths


def _coronal(spec: SynthSpec, index: int, ds: Dataset, vol: Volume, here: Path) -> list[Path]:
    planes = max(spec.rows, spec.slices + 1)  # more images than the axial series
    step = (spec.rows - 1) * spec.pixel_spacing / (planes - 1)
    images = coronal_planes(vol, planes)
    x0, y0, top = _corner(spec)
    ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
    ds.ImageOrientationPatient = CORONAL
    ds.PixelSpacing = [_ds(spec.slice_thickness), _ds(spec.pixel_spacing)]
    ds.Rows, ds.Columns = spec.slices, spec.columns
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(step)
    paths = []
    for k in range(planes):
        sop = _uid(spec, index, int(ds.SeriesNumber), k)
        paths.append(_write_image(here, ds, _stored(images[k]), k, sop, (x0, y0 + k * step, top)))
    return paths


def _topogram(spec: SynthSpec, index: int, ds: Dataset, vol: Volume, here: Path) -> list[Path]:
    """One projection image, coronal like an AP scout, over the primary's extent."""
    x0, _, top = _corner(spec)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = CORONAL
    ds.PixelSpacing = [_ds(spec.slice_thickness), _ds(spec.pixel_spacing)]
    ds.Rows, ds.Columns = spec.slices, spec.columns
    del ds.SliceThickness, ds.SpacingBetweenSlices  # a projection has no slice
    sop = _uid(spec, index, int(ds.SeriesNumber), 0)
    return [_write_image(here, ds, _stored(projection(vol)), 0, sop, (x0, 0.0, top))]


def _annotation(
    spec: SynthSpec,
    index: int,
    kind: str,
    ds: Dataset,
    primary: Sequence[Path],
    truth: LesionTruth,
    path: Path,
) -> Path:
    from radflow.synth_annotations import AnnotationHeader, write_rtstruct, write_seg

    number = int(ds.SeriesNumber)
    head = AnnotationHeader(
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=_uid(spec, index, number, 0),
        dimension_uid=_uid(spec, index, number, "dimension"),
        series_number=number,
        description=str(ds.SeriesDescription),
        creator=_PHYSICIANS[int(_chance(spec, index, "reader") * len(_PHYSICIANS))],
        date=str(ds.SeriesDate),
        time=str(ds.SeriesTime),
    )
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in primary]
    write = write_seg if kind == "seg" else write_rtstruct
    return write(path, sources, truth.mask(), head)
