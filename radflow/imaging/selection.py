"""Which series of a study becomes its volume: declarative rules over header summaries.

A study holds more than one image series: localizers (topograms, scouts), thick and thin
recons, reformats, and non-image objects (SEG, RTSTRUCT, SR, KO, PR, encapsulated documents,
dose reports, secondary captures, raw data). `summarise_series` reads a series' headers
(never its pixels); `select_series` applies `SeriesRules` in a fixed order, records the
first rule each series fails, and names the primary; `require_primary` turns "nothing
usable" into radflow's own quarantine reason. Non-image objects are recognised by SOP class
and listed as objects: they are never read as image series and never registered.

Primary rule: the kept series the study's annotation references, if any; else, among the
kept series, the thinnest recon (slice thickness, else slice spacing, to 0.01 mm) and of
those the one with most slices; ties go to the lower series number, then the series UID.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from radflow.errors import QuarantineError
from radflow.imaging.read import SeriesPlan, plan_series_with_headers
from radflow.lake.records import SeriesChoice, SeriesSelection, StudyObject
from radflow.limits import DEFAULT_MAX_SERIES_VOXELS

if TYPE_CHECKING:
    from radflow.config import SeriesRules

# Non-image objects by what pydicom's UID dictionary calls their SOP class: (pattern searched
# in the name, kind). First match wins, so dose reports come before other SRs. The table is
# built once from pydicom's names, so SOP classes the standard adds are recognised too.
_OBJECT_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"Radiation Dose SR", "RDSR"),
    (r"Key Object Selection", "KO"),
    (r"\bSR Storage|Procedure Log|Report Storage", "SR"),
    (r"Segmentation Storage", "SEG"),
    (r"RT Structure Set", "RTSTRUCT"),
    (r"Presentation State Storage", "PR"),
    (r"Encapsulated .* Storage", "DOC"),
    (r"Secondary Capture Image Storage", "SC"),
    (r"Raw Data Storage", "RAW"),
    (r"Spatial Registration Storage", "REG"),
    (r"^RT (Ion )?(Plan|Beams|Treatment|Dose)|Treatment Record", "RT"),
)


def _object_table() -> dict[str, tuple[str, str]]:
    """SOP Class UID -> (kind, pydicom's name) for every non-image SOP class radflow knows."""
    table = {}
    for uid, (name, kind_of_uid, *_rest) in UID_dictionary.items():
        if kind_of_uid != "SOP Class":
            continue
        for pattern, kind in _OBJECT_PATTERNS:
            if re.search(pattern, name):
                table[uid] = (kind, name)
                break
    return table


# SOP classes newer than pydicom's dictionary (3.0): DICOM 2024c's LABELMAP segmentations.
_NEWER_OBJECTS = {"1.2.840.10008.5.1.4.1.1.66.7": ("SEG", "Label Map Segmentation Storage")}
OBJECT_SOP_CLASSES = {**_NEWER_OBJECTS, **_object_table()}
# Modalities whose images are projections: one image per view, never a 3-D stack.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RG"})
# The rules in the order they are applied; a series is dropped by the first it fails.
RULES = (
    "projection",
    "mosaic",
    "localizer",
    "min_slices",
    "modality",
    "sop_class",
    "derived",
    "geometry",
    "orientation",
    "slice_thickness",
    "description_exclude",
    "description_include",
)


@dataclass(frozen=True)
class SeriesSummary:
    """One series' key attributes from its headers; `problem` is why its files cannot be
    laid out as one volume (reason, detail), found from the headers as `read_series` would."""

    series_uid: str
    series_number: int | None
    modality: str
    sop_class_uid: str
    image_type: tuple[str, ...]  # the first file's
    flags: frozenset[str]  # every ImageType value any file carries (localizers may mix them)
    description: str
    images: int
    frames: int
    slice_thickness_mm: float | None
    slice_spacing_mm: float | None
    normal: tuple[float, float, float] | None
    has_pixels: bool
    problem: tuple[str, str] | None = None

    @property
    def object_kind(self) -> str | None:
        """SEG, RTSTRUCT, SR, ... for a non-image object; None for an image series."""
        found = OBJECT_SOP_CLASSES.get(self.sop_class_uid)
        if found is not None:
            return found[0]
        return None if self.has_pixels else "OTHER"

    @property
    def sop_class(self) -> str:
        entry = UID_dictionary.get(self.sop_class_uid)
        return entry[0] if entry else (self.sop_class_uid or "unknown")

    @property
    def normal_angle_degrees(self) -> float | None:
        """The angle between the slice normal and the patient's foot-head axis (0: axial)."""
        if self.normal is None:
            return None
        return math.degrees(math.acos(min(1.0, abs(self.normal[2]))))

    @property
    def plane(self) -> str:
        """axial, coronal or sagittal by the normal's largest component ("" without one)."""
        if self.normal is None:
            return ""
        return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(self.normal)))]

    @property
    def recon_mm(self) -> float | None:
        """The recon's slice thickness, else its slice spacing."""
        return self.slice_thickness_mm or self.slice_spacing_mm


# --------------------------------------------------------------------------- headers


def _text(ds: Dataset, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "")
    except Exception:  # pydicom raises many types on malformed values
        return ""


def _number(ds: Dataset | None, keyword: str) -> float | None:
    if ds is None:
        return None
    try:
        value = ds.get(keyword)
        number = float(value) if value not in (None, "") else None
    except Exception:  # a malformed value counts as absent; read_series names it later
        return None
    return number if number is not None and math.isfinite(number) else None


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    try:
        items = ds.get(keyword) if ds is not None else None
        return items[0] if items else None
    except Exception:
        return None


def _functional(ds: Dataset, group: str, keyword: str) -> Dataset | None:
    """The dataset holding `keyword`: the top level, or the shared or first per-frame
    functional group `group` of an enhanced multi-frame file."""
    if keyword in ds:
        return ds
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        item = _first_item(_first_item(ds, sequence), group)
        if item is not None and keyword in item:
            return item
    return None


def _normal(ds: Dataset) -> tuple[float, float, float] | None:
    holder = _functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    try:
        cosines = [float(v) for v in holder.ImageOrientationPatient] if holder else []
    except Exception:
        return None
    if len(cosines) != 6 or not all(math.isfinite(c) for c in cosines):
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    norm = float(np.linalg.norm(normal))
    if norm < 0.5:
        return None
    return (float(normal[0] / norm), float(normal[1] / norm), float(normal[2] / norm))


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except Exception:
        return 1


def summarise_series(
    series_uid: str, paths: Sequence[Path], max_voxels: int = DEFAULT_MAX_SERIES_VOXELS
) -> SeriesSummary:
    """A series' summary from its files' headers (pixels are never read).

    Values that cannot be read count as absent here; an image series whose files do not
    make one volume gets the reason `read_series` would quarantine it with as `problem`.
    """
    return summarise_and_plan(series_uid, paths, max_voxels)[0]


def summarise_and_plan(
    series_uid: str, paths: Sequence[Path], max_voxels: int = DEFAULT_MAX_SERIES_VOXELS
) -> tuple[SeriesSummary, SeriesPlan | None]:
    """`summarise_series`, and the reading plan of an image series that makes one volume:
    `read_planned` reads it without parsing its headers again. An image series' headers are
    parsed once, by the plan (on a 300-slice CT a header pass is about a tenth of the volumes
    stage); only a series the plan refuses is parsed again, leniently, for its summary."""
    try:
        plan, headers = plan_series_with_headers(paths, max_voxels)
    except QuarantineError as err:
        plan, headers, problem = None, _lenient_headers(paths), (err.reason, err.detail)
    if not headers:
        return SeriesSummary(
            series_uid, None, "", "", (), frozenset(), "", len(paths), 0, None, None, None,
            True, ("unreadable DICOM", "no file of the series could be read"),
        ), None  # fmt: skip
    summary = _summary(series_uid, len(paths), headers)
    if summary.object_kind is not None:
        return summary, None
    if plan is None:
        return replace(summary, problem=problem), None
    spacing = float(plan.spacing[2]) if plan.frames > 1 else None
    return replace(summary, slice_spacing_mm=spacing), plan


def _lenient_headers(paths: Sequence[Path]) -> list[Dataset]:
    """The headers pydicom can parse at all (forced), the others left out."""
    headers = []
    for path in paths:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True, force=True))
        except Exception:  # pydicom raises many types on malformed bytes
            continue
    return headers


def _summary(series_uid: str, images: int, headers: Sequence[Dataset]) -> SeriesSummary:
    first = headers[0]
    number = _number(first, "SeriesNumber")
    return SeriesSummary(
        series_uid=series_uid,
        series_number=int(number) if number is not None else None,
        modality=_text(first, "Modality").upper(),
        sop_class_uid=_text(first, "SOPClassUID"),
        image_type=tuple(v.upper() for v in _image_type(first)),
        flags=frozenset(v.upper() for ds in headers for v in _image_type(ds)),
        description=_text(first, "SeriesDescription"),
        images=images,
        frames=sum(_frames(ds) for ds in headers),
        slice_thickness_mm=_number(
            _functional(first, "PixelMeasuresSequence", "SliceThickness"), "SliceThickness"
        ),
        slice_spacing_mm=None,
        normal=_normal(first),
        has_pixels=any("Rows" in ds for ds in headers),
    )


def _image_type(ds: Dataset) -> list[str]:
    try:
        value = ds.get("ImageType")
    except Exception:
        return []
    if value is None or value == "":
        return []
    return [str(v) for v in value] if not isinstance(value, str) else value.split("\\")


def group_studies(paths: Iterable[Path]) -> dict[str, dict[str, list[Path]]]:
    """DICOM files by StudyInstanceUID, then SeriesInstanceUID (objects included); files
    that are not DICOM or name no study or series are left out."""
    studies: dict[str, dict[str, list[Path]]] = {}
    for path in paths:
        try:
            ds = pydicom.dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SeriesInstanceUID"],
            )
        except Exception:  # not DICOM, or unreadable: in no study
            continue
        study, series = _text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID")
        if study and series:
            studies.setdefault(study, {}).setdefault(series, []).append(Path(path))
    return {k: {u: sorted(v) for u, v in sorted(studies[k].items())} for k in sorted(studies)}


def select_files(
    series: Mapping[str, Sequence[Path]],
    rules: SeriesRules,
    max_voxels: int = DEFAULT_MAX_SERIES_VOXELS,
    preferred_series_uid: str | None = None,
) -> tuple[SeriesSelection, list[SeriesSummary]]:
    """`select_series` on a study's files, by series UID; also the summaries it used."""
    summaries = [summarise_series(uid, paths, max_voxels) for uid, paths in series.items()]
    return select_series(summaries, rules, preferred_series_uid), summaries


# --------------------------------------------------------------------------- rules


@cache
def _sop_class_uids(keywords: tuple[str, ...]) -> frozenset[str]:
    """The UIDs of SOP classes named by pydicom keyword (`CTImageStorage`)."""
    return frozenset(uid for uid, entry in UID_dictionary.items() if entry[4] in keywords)


def _failed_rule(s: SeriesSummary, rules: SeriesRules) -> tuple[str, str] | None:
    """The first rule (in `RULES` order) `s` fails, with its words; None when it passes all."""
    if s.modality in PROJECTION_MODALITIES:
        which = "CR/DX" if s.modality in ("CR", "DX") else s.modality
        return "projection", f"projection radiograph ({which}): not a 3-D series"
    if "MOSAIC" in s.flags:
        return "mosaic", "Siemens MOSAIC: not unpacked"
    if {"LOCALIZER", "SCOUT"} & s.flags:
        return "localizer", "localizer or scout (ImageType LOCALIZER): not a 3-D series"
    if s.frames < rules.min_slices:
        return "min_slices", (
            f"too few slices for a 3-D volume: {s.frames} (need {rules.min_slices})"
        )
    if s.modality not in rules.modalities:
        return "modality", f"modality {s.modality or 'absent'} is not {', '.join(rules.modalities)}"
    if s.sop_class_uid not in _sop_class_uids(rules.sop_classes):
        return "sop_class", f"SOP class {s.sop_class} is not a selected image class"
    original = s.image_type[:1] == ("ORIGINAL",) and s.image_type[1:2] in ((), ("PRIMARY",))
    if s.image_type and not original and not rules.allow_derived:
        value = "\\".join(s.image_type[:2])
        return "derived", f"derived image (ImageType {value}), not ORIGINAL\\PRIMARY"
    if s.problem is not None:
        reason, detail = s.problem
        return "geometry", f"{reason}: {detail}" if detail else reason
    angle = s.normal_angle_degrees
    tolerance = rules.axial_tolerance_degrees
    if tolerance is not None and angle is not None and angle > tolerance:
        return "orientation", (
            f"{s.plane}, not axial: slice normal {angle:.1f} degrees off the patient's axis "
            f"(tolerance {tolerance:g})"
        )
    low, high = rules.slice_thickness_mm
    if s.recon_mm is not None and not low <= s.recon_mm <= high:
        return "slice_thickness", (
            f"slice thickness {s.recon_mm:g} mm outside {low:g} to {high:g} mm"
        )
    for pattern in rules.description_exclude:
        if re.search(pattern, s.description, re.IGNORECASE):
            return "description_exclude", f"SeriesDescription matches exclude pattern {pattern!r}"
    if rules.description_include and not any(
        re.search(p, s.description, re.IGNORECASE) for p in rules.description_include
    ):
        return "description_include", "SeriesDescription matches no include pattern"
    return None


def _primary_key(s: SeriesSummary) -> tuple[float, int, int, str]:
    recon = round(s.recon_mm, 2) if s.recon_mm is not None else math.inf
    number = s.series_number if s.series_number is not None else 2**31
    return (recon, -s.frames, number, s.series_uid)


def select_series(
    summaries: Sequence[SeriesSummary],
    rules: SeriesRules,
    preferred_series_uid: str | None = None,
) -> SeriesSelection:
    """Every series kept or dropped by `rules`, objects apart, and the primary (see the
    module docstring for the rule). `preferred_series_uid`: the series the study's
    annotation references; it wins when it is kept."""
    objects = []
    verdicts: dict[str, tuple[str, str] | None] = {}
    images = []
    for s in summaries:
        kind = s.object_kind
        if kind is not None:
            objects.append(
                StudyObject(
                    series_uid=s.series_uid,
                    series_number=s.series_number,
                    modality=s.modality,
                    kind=kind,
                    sop_class=s.sop_class,
                    instances=s.images,
                    description=s.description,
                )
            )
            continue
        images.append(s)
        verdicts[s.series_uid] = _failed_rule(s, rules)
    kept = [s for s in images if verdicts[s.series_uid] is None]
    primary, primary_rule = None, ""
    preferred = [s for s in kept if s.series_uid == preferred_series_uid]
    if preferred:
        primary, primary_rule = preferred[0], "referenced by the study's annotation"
    elif kept:
        primary = min(kept, key=_primary_key)
        primary_rule = "thinnest recon, then most slices"
    choices = []
    for s in sorted(
        images, key=lambda s: (s is not primary, bool(verdicts[s.series_uid]), _primary_key(s))
    ):
        verdict = verdicts[s.series_uid]
        role = "dropped" if verdict else "primary" if s is primary else "secondary"
        choices.append(
            SeriesChoice(
                series_uid=s.series_uid,
                series_number=s.series_number,
                modality=s.modality,
                sop_class=s.sop_class,
                image_type=list(s.image_type),
                description=s.description,
                images=s.images,
                frames=s.frames,
                slice_thickness_mm=s.slice_thickness_mm,
                plane=s.plane,
                normal_angle_degrees=(
                    round(a, 2) if (a := s.normal_angle_degrees) is not None else None
                ),
                role=role,
                rule=verdict[0] if verdict else "",
                reason=verdict[1] if verdict else "",
            )
        )
    return SeriesSelection(
        series=choices,
        objects=sorted(objects, key=lambda o: (o.kind, o.series_number or 0, o.series_uid)),
        primary=primary.series_uid if primary else None,
        primary_rule=primary_rule,
    )


def require_primary(selection: SeriesSelection, summaries: Sequence[SeriesSummary]) -> str:
    """The primary's series UID, or a QuarantineError with radflow's reason why the study has
    none: the verdict of the image series that got furthest through the rules (most frames
    among equals), or "no image series" naming the objects the study holds."""
    if selection.primary is not None:
        return selection.primary
    detail = "; ".join(f"{c.modality} {c.frames}: {c.rule}" for c in selection.dropped)
    if not selection.series:
        kinds = sorted({o.kind for o in selection.objects})
        only = ", ".join(kinds) if kinds else "nothing"
        raise QuarantineError(f"no image series: only {only}", f"{len(selection.objects)} objects")
    best = max(selection.series, key=lambda c: (RULES.index(c.rule), c.frames))
    if best.rule == "geometry":  # read_series' own reason, as when the series was read
        problem = next(s.problem for s in summaries if s.series_uid == best.series_uid)
        assert problem is not None
        raise QuarantineError(problem[0], problem[1])
    raise QuarantineError(best.reason, f"every image series dropped ({detail})")
