"""Where a study's region of interest comes from, tried in the configured order.

1. `annotation`: the study's own SEG or RTSTRUCT (objects of the de-identified study), or a
   label map given with `radflow ingest --masks`. It must reference the primary series and
   lie on its grid; one that does not is set aside with a QC warning giving the reason and
   the offset, and the next source is tried.
2. `model`: the champion segmentation model (radflow/segmentation), when there is one: its
   mask, post-processed; a study where it finds nothing plausible is quarantined, naming it.
3. `rule`: the demo's threshold rule (radflow/imaging/roi.py), only where configured.

With none of them the study is quarantined: measuring the wrong tissue (the rule on a real
chest finds the spine) is worse than measuring nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from radflow.annotations import check_references, choose_segment, segments_on_grid
from radflow.errors import QuarantineError
from radflow.imaging.roi import lesion_mask

if TYPE_CHECKING:
    from radflow.config import PreprocessParams

NO_ROI = "no region of interest: no annotation and no segmentation model"


@dataclass(frozen=True)
class Segmenter:
    """A segmentation model's seam: `segment` takes the primary image and gives a uint8 mask
    on its grid (or raises QuarantineError); `model_id` names the model in the ROI source."""

    model_id: str
    segment: Callable[[sitk.Image], sitk.Image]


@dataclass(frozen=True)
class Annotation:
    """One annotation file of a study: `kind` is "SEG", "RTSTRUCT" or "labelmap"."""

    path: Path
    kind: str


@dataclass(frozen=True)
class Roi:
    """The mask on the primary's grid and its source ("annotation:SEG", "rule", ...)."""

    mask: sitk.Image
    source: str


def _from_annotation(
    annotation: Annotation,
    primary: sitk.Image,
    primary_uid: str,
    primary_instances: set[str],
    params: PreprocessParams,
) -> sitk.Image:
    if annotation.kind != "labelmap":
        check_references(annotation.path, primary_uid, primary_instances)
    selection = params.roi_segment
    segments = segments_on_grid(annotation.path, primary, tolerance_mm=selection.tolerance_mm)
    if annotation.kind == "labelmap":
        # A label map's segments are its values ("label 2"): names and codes chosen for the
        # site's SEGs and RTSTRUCTs do not apply (the masks CSV picks its label instead).
        chosen = choose_segment(segments, number=selection.number)
    else:
        chosen = choose_segment(
            segments, label=selection.label, number=selection.number, code=selection.code
        )
    if not sitk.GetArrayViewFromImage(chosen.mask).any():
        raise QuarantineError("annotation segment is empty", f"segment {chosen.number}")
    return chosen.mask


def find_roi(
    primary: sitk.Image,
    modality: str,
    primary_uid: str,
    primary_instances: set[str],
    annotations: Sequence[Annotation],
    params: PreprocessParams,
    segmenter: Segmenter | None = None,
) -> tuple[Roi, list[str]]:
    """The first source in `params.roi_sources` that gives an ROI, and the QC warnings of
    the ones set aside on the way. QuarantineError when none does."""
    warnings: list[str] = []
    for source in params.roi_sources:
        if source == "annotation":
            for annotation in annotations:
                try:
                    mask = _from_annotation(
                        annotation, primary, primary_uid, primary_instances, params
                    )
                except QuarantineError as err:
                    warnings.append(f"{annotation.kind} annotation not used: {err}")
                    continue
                return Roi(mask, f"annotation:{annotation.kind}"), warnings
        elif source == "model" and segmenter is not None:
            return Roi(segmenter.segment(primary), f"model:{segmenter.model_id}"), warnings
        elif source == "rule":
            if modality != "CT":
                warnings.append(f"ROI rule uses an HU threshold on {modality}")
            mask = lesion_mask(primary, threshold_hu=params.roi_threshold_hu)
            return Roi(mask, "rule"), warnings
    tried = ", ".join(params.roi_sources)
    raise QuarantineError(NO_ROI, "; ".join([f"sources tried: {tried}", *warnings]))
