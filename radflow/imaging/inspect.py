"""What an image file or folder holds, in LPS, without reading its pixels.

For `radflow inspect PATH [--json]`: size, spacing, origin, direction and modality of a
DICOM series folder, a single DICOM file or a NIfTI file. DICOM geometry is what
`read_series` would give (after any resampling), worked out from the headers alone. Nothing
printed names a patient: no paths, UIDs or descriptions, only numbers and codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radflow.errors import QuarantineError
from radflow.imaging.nifti import is_nifti, read_nifti_geometry
from radflow.imaging.read import group_series, plan_series
from radflow.imaging.selection import group_studies, require_primary, select_files

if TYPE_CHECKING:
    from radflow.config import SeriesRules

# What the selection table shows of a series or object: never its UID or description.
_CHOICE_FIELDS = (
    "series_number", "modality", "sop_class", "image_type", "images", "frames",
    "slice_thickness_mm", "plane", "normal_angle_degrees", "role", "rule", "reason",
)  # fmt: skip
_OBJECT_FIELDS = ("series_number", "modality", "kind", "sop_class", "instances")


def inspect_path(path: Path, rules: SeriesRules | None = None) -> dict[str, Any]:
    """One entry for a file or a one-series folder; `{"series": [...]}` for several series.

    A series in a folder that cannot be read gets an entry with its "error" (reason and
    detail) so the others still show; a single file that cannot be read raises
    QuarantineError. A folder also gets "studies": per study, every series kept or dropped
    by `rules` (default: `SeriesRules()`) and the objects, as the preprocess stage decides.
    """
    path = Path(path)
    if path.is_dir():
        return _folder(path, rules)
    if is_nifti(path):
        return _nifti(path)
    return _dicom([path], "DICOM file")


def _dicom(files: Sequence[Path], kind: str) -> dict[str, Any]:
    plan = plan_series(files)
    return {
        "kind": kind,
        "modality": plan.modality or "unknown",
        "series_number": plan.series_number,
        "files": plan.files,
        "frames": plan.frames,
        "size": list(plan.size),
        "spacing": list(plan.spacing),
        "origin": list(plan.origin),
        "direction": list(plan.direction),
        "warnings": list(plan.warnings),
    }


def _nifti(path: Path) -> dict[str, Any]:
    geometry = read_nifti_geometry(path)
    return {
        "kind": "NIfTI file",
        "modality": "NIfTI",
        "files": 1,
        "frames": geometry.volumes,
        "size": list(geometry.size),
        "spacing": list(geometry.spacing),
        "origin": list(geometry.origin),
        "direction": list(geometry.direction),
        "warnings": [],
    }


def _folder(folder: Path, rules: SeriesRules | None) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    by_study = group_studies(files)
    studies = [_selection(series, rules) for series in by_study.values()]
    objects = {uid for study in studies for uid in study.pop("object_uids")}
    # Objects (a SEG has pixels, but is no image series) show in the selection only.
    groups = {uid: m for uid, m in group_series(files).items() if uid not in objects}
    if not groups and not studies:
        raise QuarantineError("no DICOM images", f"none among {len(files)} files")
    entries = []
    for members in groups.values():
        try:
            entries.append(_dicom(members, "DICOM series"))
        except QuarantineError as e:
            entries.append({"kind": "DICOM series", "files": len(members), "error": _error(e)})
    skipped = len(files) - sum(len(members) for members in groups.values())
    if len(entries) == 1:
        return {**entries[0], "skipped_files": skipped, "studies": studies}
    return {"series": entries, "skipped_files": skipped, "studies": studies}


def _selection(series: dict[str, list[Path]], rules: SeriesRules | None) -> dict[str, Any]:
    """One study's series selection, without UIDs or descriptions."""
    from radflow.config import SeriesRules

    selection, summaries = select_files(series, rules or SeriesRules())
    try:
        require_primary(selection, summaries)
        refused = None
    except QuarantineError as e:
        refused = _error(e)
    return {
        "series": [{k: getattr(c, k) for k in _CHOICE_FIELDS} for c in selection.series],
        "objects": [{k: getattr(o, k) for k in _OBJECT_FIELDS} for o in selection.objects],
        "primary_rule": selection.primary_rule,
        "refused": refused,
        "object_uids": [o.series_uid for o in selection.objects],  # popped by _folder
    }


def _error(e: QuarantineError) -> dict[str, str]:
    return {"reason": e.reason, "detail": e.detail}


def _numbers(values: Sequence[float], digits: int = 6) -> str:
    # Rounded to a micrometre (or 1e-6 of a cosine); + 0.0 turns -0 into 0.
    return ", ".join(f"{round(v, 6) + 0.0:.{digits}g}" for v in values)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _block(d: dict[str, Any]) -> list[str]:
    if "error" in d:
        return [
            f"{d['kind']}: {_count(d['files'], 'file')}",
            f"  refused    {d['error']['reason']}: {d['error']['detail']}",
        ]
    if d["modality"] == "NIfTI":
        head = f"{d['kind']}: {_count(d['frames'], 'volume')}"
    else:
        head = f"{d['kind']}: {d['modality']}, {_count(d['files'], 'file')}, "
        head += _count(d["frames"], "frame")
    if d.get("series_number") is not None:
        head += f", series number {d['series_number']}"
    direction = d["direction"]
    lines = [
        head,
        f"  size       {' x '.join(str(n) for n in d['size'])} voxels",
        f"  spacing    {_numbers(d['spacing'])} mm",
        f"  origin     {_numbers(d['origin'])} mm (LPS)",
        "  direction  " + " | ".join(_numbers(direction[i : i + 3], 4) for i in (0, 3, 6)),
    ]
    lines += [f"  warning    {w}" for w in d["warnings"]]
    return lines


def _selection_lines(study: dict[str, Any]) -> list[str]:
    """A study's series, one line each: number, modality, slices, thickness, plane, verdict."""
    lines = []
    for c in study["series"]:
        thickness = "" if c["slice_thickness_mm"] is None else f"{c['slice_thickness_mm']:g} mm"
        verdict = c["role"] + (f" by {c['rule']}: {c['reason']}" if c["rule"] else "")
        number = c["series_number"] if c["series_number"] is not None else "?"
        lines.append(
            f"  #{number:<5} {c['modality']:<8} {_count(c['frames'], 'slice'):>10}  "
            f"{thickness:>8}  {c['plane'] or '-':<8}  {verdict}"
        )
    for o in study["objects"]:
        number = o["series_number"] if o["series_number"] is not None else "?"
        lines.append(
            f"  #{number:<5} {o['kind']:<8} {_count(o['instances'], 'object'):>10}  "
            f"{'':>8}  {'-':<8}  object: {o['sop_class']}"
        )
    if study["refused"]:
        lines.append(f"  refused    {study['refused']['reason']}")
    else:
        lines.append(f"  primary    {study['primary_rule']}")
    return lines


def format_inspection(d: dict[str, Any]) -> str:
    """`inspect_path`'s result for a person: one block per series, direction row by row, then
    each study's series selection."""
    blocks = [_block(entry) for entry in d["series"]] if "series" in d else [_block(d)]
    lines = [f"{len(blocks)} series"] if len(blocks) > 1 else []
    for i, block in enumerate(blocks, start=1):
        lines += [f"[{i}] {block[0]}", *block[1:]] if len(blocks) > 1 else block
    if d.get("skipped_files"):
        lines.append(f"({d['skipped_files']} files that hold no image series were skipped)")
    studies = d.get("studies", [])
    for i, study in enumerate(studies, start=1):
        of = f" (study {i} of {len(studies)})" if len(studies) > 1 else ""
        lines += [f"series selection{of}:", *_selection_lines(study)]
    return "\n".join(lines)
