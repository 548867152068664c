"""What an image file or folder holds, in LPS, without reading its pixels.

For `radflow inspect PATH [--json]`: size, spacing, origin, direction and modality of a
DICOM series folder, a single DICOM file or a NIfTI file. DICOM geometry is what
`read_series` would give (after any resampling), worked out from the headers alone. Nothing
printed names a patient: no paths, UIDs or descriptions, only numbers and codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radflow.errors import QuarantineError
from radflow.imaging.nifti import is_nifti, read_nifti_geometry
from radflow.imaging.read import group_series, plan_series


def inspect_path(path: Path) -> dict[str, Any]:
    """One entry for a file or a one-series folder; `{"series": [...]}` for several series.

    A series in a folder that cannot be read gets an entry with its "error" (reason and
    detail) so the others still show; a single file that cannot be read raises
    QuarantineError.
    """
    path = Path(path)
    if path.is_dir():
        return _folder(path)
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


def _folder(folder: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    groups = group_series(files)
    if not groups:
        raise QuarantineError("no DICOM images", f"none among {len(files)} files")
    entries = []
    for members in groups.values():
        try:
            entries.append(_dicom(members, "DICOM series"))
        except QuarantineError as e:
            entries.append({"kind": "DICOM series", "files": len(members), "error": _error(e)})
    skipped = len(files) - sum(len(members) for members in groups.values())
    if len(entries) == 1:
        return {**entries[0], "skipped_files": skipped}
    return {"series": entries, "skipped_files": skipped}


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


def format_inspection(d: dict[str, Any]) -> str:
    """`inspect_path`'s result for a person: one block per series, direction row by row."""
    blocks = [_block(entry) for entry in d["series"]] if "series" in d else [_block(d)]
    lines = [f"{len(blocks)} series"] if len(blocks) > 1 else []
    for i, block in enumerate(blocks, start=1):
        lines += [f"[{i}] {block[0]}", *block[1:]] if len(blocks) > 1 else block
    if d.get("skipped_files"):
        lines.append(f"({d['skipped_files']} files that hold no DICOM image were skipped)")
    return "\n".join(lines)
