"""Register and preprocess: a de-identified study -> `volumes/<v>/<hash>/`.

The primary series and the secondaries come from declarative rules (`params.series`); the
selection (every series kept or dropped, and why) goes into `qc.json`.

Outputs: `image.nii.gz` (HU for CT, resampled and cropped around the ROI; what features read),
`input.nii.gz` (windowed to [0, 1]; what a network reads), `mask.nii.gz` (the ROI, from the
source `radflow.imaging.roi_source` finds: the study's annotation, the segmentation champion,
or the rule), and `qc.json` (geometry, registration, ROI source, warnings), written last as
the commit marker. A study whose ROI is its annotation also keeps `whole.nii.gz` and
`whole_mask.nii.gz` (the uncropped primary on the same grid, and the annotation on it): what
the segmentation model trains and is tested on.

The second input, `roi_model`, is the segmentation champion's address ("" for none): it is
part of the volume's address, so a new champion gives studies a new volume rather than a
stale one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from radflow.annotations import referenced_series
from radflow.config import PreprocessParams, Settings
from radflow.errors import QuarantineError
from radflow.imaging.pipelines import (
    ct_only_warnings,
    preprocess_pipelines,
    preprocessing,
    whole_pipeline,
)
from radflow.imaging.qc import checkerboard_png
from radflow.imaging.read import read_planned
from radflow.imaging.register import register, resample_onto, write_transform
from radflow.imaging.roi_checks import roi_warnings
from radflow.imaging.roi_source import Annotation, Segmenter, find_roi
from radflow.imaging.selection import (
    SeriesSummary,
    require_primary,
    select_series,
    summarise_and_plan,
)
from radflow.keys import address as content_address
from radflow.lake import Lake
from radflow.lake.records import Geometry, Registration, VolumeQC
from radflow.limits import DEFAULT_MAX_SERIES_VOXELS
from radflow.scratch import scratch_dir

NAME = "preprocess"


def volume_address(deid: str, params: PreprocessParams, roi_model: str = "") -> str:
    # The lake's prefix for this stage's outputs is `volumes` (inside every address).
    used = roi_model if "model" in params.roi_sources else ""
    return content_address("volumes", [deid, used] if used else [deid], preprocessing(params))


def address(settings: Settings, deid: str, roi_model: str) -> str:
    return volume_address(deid, settings.preprocess, roi_model)


def run(lake: Lake, settings: Settings, deid: str, roi_model: str) -> str:
    return build_volume(lake, deid, settings.preprocess, settings.max_series_voxels, roi_model)


def model_segmenter(lake: Lake, roi_model: str) -> Segmenter:
    """The registered segmentation model as an ROI source: its post-processed mask, or a
    quarantine naming it when it finds nothing (or nothing of a plausible volume)."""
    from radflow.segmentation.infer import segment_image

    card = lake.segmentation_card(roi_model)
    model = lake.segmentation_model(roi_model)
    params = model.params

    def segment(primary: sitk.Image) -> sitk.Image:
        found = segment_image(model, primary)
        if found.problem == "empty":
            raise QuarantineError(
                f"no region found by model {card.model_id}",
                f"no voxel above probability {params.threshold}",
            )
        if found.problem is not None:
            raise QuarantineError(
                f"implausible region found by model {card.model_id}",
                f"{found.problem}: {found.volume_ml:.3f} ml; plausible "
                f"{params.min_volume_ml}-{params.max_volume_ml} ml",
            )
        return found.mask

    return Segmenter(card.model_id, segment)


def _geometry(image: sitk.Image) -> Geometry:
    return Geometry(
        size=list(image.GetSize()),
        spacing_mm=[round(s, 6) for s in image.GetSpacing()],
        origin_mm=[round(o, 4) for o in image.GetOrigin()],
        direction=[round(d, 6) for d in image.GetDirection()],
    )


def _annotations(
    lake: Lake,
    deid: str,
    summaries: list[SeriesSummary],
    files: dict[str, list[Path]],
    tmp: Path,
) -> list[tuple[Annotation, str | None]]:
    """The study's annotations with the series each references: its SEG and RTSTRUCT
    objects (in series order), then the label map given with it."""
    found = []
    for summary in sorted(summaries, key=lambda s: (s.series_number or 0, s.series_uid)):
        if summary.object_kind in ("SEG", "RTSTRUCT"):
            for path in files[summary.series_uid]:
                try:
                    referenced = referenced_series(path)
                except QuarantineError:
                    referenced = None  # find_roi says why, when it tries it
                found.append((Annotation(path, summary.object_kind), referenced))
    labelmap = lake.study_labelmap(deid, tmp)
    if labelmap is not None:
        found.append((Annotation(labelmap, "labelmap"), None))
    return found


def _annotated_series(
    annotations: list[tuple[Annotation, str | None]], files: dict[str, list[Path]]
) -> str | None:
    """The series the first annotation that names one of the study's series references: it
    is the primary, whatever the other rules would prefer."""
    return next((uid for _, uid in annotations if uid in files), None)


def _instance_uids(paths: list[Path]) -> set[str]:
    return {
        str(
            pydicom.dcmread(
                p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
            ).SOPInstanceUID
        )
        for p in paths
    }


def build_volume(
    lake: Lake,
    deid: str,
    params: PreprocessParams,
    max_voxels: int = DEFAULT_MAX_SERIES_VOXELS,
    roi_model: str = "",
) -> str:
    """`max_voxels` bounds each series (see `plan_series`); it decides whether a study is
    refused, not what a built volume holds, so it is not part of the address.

    The series are chosen by `params.series` (`radflow.imaging.selection`): non-image objects
    are listed, never read; the primary is read and gets the ROI; each other kept series is
    registered onto it, and one that cannot be is a QC warning, not a failed study."""
    out = volume_address(deid, params, roi_model)
    if lake.has(out):
        return out
    manifest = lake.manifest(deid)
    with scratch_dir("vol") as tmp:
        files = {
            entry.series_uid: lake.series_files(deid, entry.series_uid, tmp / entry.series_uid)
            for entry in manifest.series
        }
        planned = {uid: summarise_and_plan(uid, paths, max_voxels) for uid, paths in files.items()}
        summaries = [summary for summary, _ in planned.values()]
        plans = {uid: plan for uid, (_, plan) in planned.items() if plan is not None}
        annotations = _annotations(lake, deid, summaries, files, tmp)
        selection = select_series(summaries, params.series, _annotated_series(annotations, files))
        primary_uid = require_primary(selection, summaries)
        chosen = {c.series_uid: c for c in selection.kept}
        # A kept series is an image series that makes one volume: it was planned.
        primary, warnings = read_planned(plans[primary_uid])
        modality = chosen[primary_uid].modality
        warnings += ct_only_warnings(params, modality)
        roi_found, roi_warnings_ = find_roi(
            primary,
            modality,
            primary_uid,
            _instance_uids(files[primary_uid]) if annotations else set(),
            [a for a, _ in annotations],
            params,
            model_segmenter(lake, roi_model) if roi_model else None,
        )
        warnings += roi_warnings_
        mask = roi_found.mask
        pipelines = preprocess_pipelines(params, modality)
        image_hu, roi = pipelines.geometry(primary, mask)
        assert roi is not None
        normalised, _ = pipelines.normalise(image_hu, roi)
        # CT keeps integer Hounsfield units; anything else keeps its float values.
        stored = sitk.sitkInt16 if modality == "CT" else sitk.sitkFloat32
        registrations: list[Registration] = []
        for choice in selection.kept:
            if choice.series_uid == primary_uid:
                continue
            what = f"secondary series {choice.series_number or '?'} ({choice.modality}, "
            what += f"{choice.frames} slices)"
            try:
                moving, moving_warnings = read_planned(plans[choice.series_uid])
                reg = register(
                    primary,
                    moving,
                    kind=params.registration,
                    working_spacing_mm=params.registration_spacing_mm,
                )
                registered = resample_onto(moving, image_hu, reg.transform)
            except QuarantineError as err:
                warnings.append(f"{what} not registered: {err.reason}")
                continue
            except RuntimeError:  # ITK's messages name source files, not data; kept out
                warnings.append(f"{what} not registered: ITK could not register it")
                continue
            warnings += [f"{what}: {w}" for w in moving_warnings]
            n = len(registrations) + 1
            registrations.append(
                Registration(
                    series=n,
                    kind=reg.kind,
                    metric=round(reg.metric, 6),
                    iterations=reg.iterations,
                    parameters=[round(p, 4) for p in reg.transform.GetParameters()],
                )
            )
            # The secondary on the primary's preprocessed grid, its transform (fixed -> moving
            # physical points, ITK's convention) and a checkerboard for a person to check.
            lake.put_image(out, f"secondary_{n}", sitk.Cast(registered, stored))
            lake.put_volume_file(out, f"secondary_{n}.tfm", write_transform(reg, tmp / f"s{n}.tfm"))
            lo = params.window_level - params.window_width / 2
            window = (lo, lo + params.window_width) if modality == "CT" else None
            png = checkerboard_png(image_hu, registered, window=window)
            lake.put_volume_file(out, f"registration_{n}.png", png)
        roi_voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(roi)))
        warnings += roi_warnings(image_hu, roi, modality)
        qc = VolumeQC(
            study_id=manifest.study_id,
            series=1 + len(registrations),
            native=_geometry(primary),
            intensity_hu=[
                float(np.min(sitk.GetArrayViewFromImage(primary))),
                float(np.max(sitk.GetArrayViewFromImage(primary))),
            ],
            registration=registrations,
            warnings=warnings,
            preprocessing=preprocessing(params),
            preprocessed=_geometry(image_hu),
            roi_voxels=roi_voxels,
            modality=modality,
            selection=selection,
            roi_source=roi_found.source,
        )
        if roi_found.source.startswith("annotation"):
            whole, whole_mask = whole_pipeline(params)(primary, mask)
            assert whole_mask is not None
            lake.put_image(out, "whole", sitk.Cast(whole, stored))
            lake.put_image(out, "whole_mask", whole_mask)
        lake.put_image(out, "image", sitk.Cast(image_hu, stored))
        lake.put_image(out, "input", normalised)
        lake.put_image(out, "mask", roi)
        lake.put_qc(out, qc)
    return out
