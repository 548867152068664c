"""The unit every annotation reader returns: one segment as a binary mask on a series' grid."""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk

from radflow.errors import QuarantineError


# eq=False: comparing SimpleITK images with == gives an image, which is always truthy, so
# the generated __eq__ would call any two segments with equal numbers and labels equal.
@dataclass(frozen=True, eq=False)
class Segment:
    """One region of an annotation, already placed on the reference series' grid.

    `number` is the SEG segment number, the RTSTRUCT ROI number or the label value;
    `label` the segment label, ROI name or "label <n>"; `code` the segmented property
    type as "<scheme>:<value>" when the annotation says it (SEG), else None; `mask` a
    uint8 0/1 image with the reference's size, origin, spacing and direction.
    """

    number: int
    label: str
    code: str | None
    mask: sitk.Image

    @property
    def voxels(self) -> int:
        """How many voxels the segment covers on the reference grid."""
        stats = sitk.StatisticsImageFilter()
        stats.Execute(self.mask)
        return int(stats.GetSum() + 0.5)


def choose_segment(
    segments: list[Segment],
    *,
    label: str | None = None,
    number: int | None = None,
    code: str | None = None,
) -> Segment:
    """The segment that is the region of interest: the one matching every criterion given
    (label case-insensitively, number, code exactly); with none given, the lowest-numbered.

    A choice that matches nothing or more than one segment is a QuarantineError: taking a
    guess would put features on the wrong tissue."""
    if not segments:
        raise QuarantineError("annotation has no segments", "nothing to choose the ROI from")
    if label is None and number is None and code is None:
        return min(segments, key=lambda s: s.number)
    found = [
        s
        for s in segments
        if (label is None or s.label.casefold() == label.casefold())
        and (number is None or s.number == number)
        and (code is None or s.code == code)
    ]
    wanted = ", ".join(
        f"{name} {value}"
        for name, value in (("label", label), ("number", number), ("code", code))
        if value is not None
    )
    if not found:
        raise QuarantineError(
            "no segment matches the ROI selection",
            f"{wanted}; the annotation has {len(segments)} segment(s)",
        )
    if len(found) > 1:
        raise QuarantineError(
            "ROI selection matches several segments",
            f"{wanted} matches {len(found)}; select by number",
        )
    return found[0]
