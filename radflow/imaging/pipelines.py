"""The preprocessing a study gets, built from its settings: the geometry pipeline, the
normalisation that makes a network's input, and the description of both that is hashed into
a volume's address and kept in its QC record (so a model can refuse volumes prepared another
way)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from radflow.imaging.preprocess import (
    N4,
    CropPad,
    Percentile,
    Pipeline,
    Reorient,
    Resample,
    Step,
    Window,
    ZScore,
)

if TYPE_CHECKING:
    from radflow.config import PreprocessParams


@dataclass(frozen=True)
class PreprocessPipelines:
    """`geometry` (optional N4, reorient, resample, crop/pad; its output keeps the scanner's
    units, what features read) and `normalise` (what makes the network input)."""

    geometry: Pipeline
    normalise: Pipeline


def normalisation(params: PreprocessParams, modality: str) -> str:
    """The normalisation a study gets: `params.normalize`, or with "auto" the modality's
    own (CT: the HU window; MR and anything else, which have no absolute scale: z-score)."""
    if params.normalize != "auto":
        return params.normalize
    return "window" if modality == "CT" else "zscore"


def _scale(params: PreprocessParams, kind: str) -> Step:
    if kind == "zscore":
        return ZScore()
    if kind == "percentile":
        return Percentile()
    return Window(params.window_level, params.window_width)


def preprocess_pipelines(params: PreprocessParams, modality: str = "CT") -> PreprocessPipelines:
    first: tuple[Step, ...] = (N4(),) if params.n4 else ()
    geometry = Pipeline((*first, Reorient(), Resample(params.spacing_mm), CropPad(params.shape)))
    scale = _scale(params, normalisation(params, modality))
    return PreprocessPipelines(geometry, Pipeline((scale,)))


def whole_pipeline(params: PreprocessParams) -> Pipeline:
    """The geometry pipeline without the crop: the whole primary on the preprocessed grid,
    what the segmentation model trains on and reads."""
    first: tuple[Step, ...] = (N4(),) if params.n4 else ()
    return Pipeline((*first, Reorient(), Resample(params.spacing_mm)))


def _normalise_description(params: PreprocessParams) -> list[dict[str, Any]]:
    if params.normalize != "auto":
        return Pipeline((_scale(params, params.normalize),)).describe()
    by_modality = {
        "CT": Pipeline((_scale(params, "window"),)).describe()[0],
        "other": Pipeline((_scale(params, "zscore"),)).describe()[0],
    }
    return [{"step": "ByModality", **by_modality}]


def preprocessing(params: PreprocessParams) -> dict[str, Any]:
    """What decides a volume besides its study (the same for every modality: with "auto"
    normalisation it names each modality's step)."""
    pipelines = preprocess_pipelines(params)
    return {
        "steps": [*pipelines.geometry.describe(), *_normalise_description(params)],
        "roi_threshold_hu": params.roi_threshold_hu,
        "registration": {
            "kind": params.registration,
            "working_spacing_mm": params.registration_spacing_mm,
        },
        "series": params.series.model_dump(),
        "roi": {
            "sources": list(params.roi_sources),
            "segment": params.roi_segment.model_dump(),
        },
    }


def ct_only_warnings(params: PreprocessParams, modality: str) -> list[str]:
    """QC warnings for settings that only make sense for CT, set while the study is not CT."""
    if modality == "CT":
        return []
    warnings = []
    if params.normalize == "window":
        warnings.append(f"normalize=window applies a CT (HU) window to {modality}")
    defaults = type(params).model_fields
    changed = [
        name
        for name in ("window_level", "window_width")
        if getattr(params, name) != defaults[name].default
    ]
    if changed and params.normalize != "window":
        warnings.append(f"{' and '.join(changed)} set (CT window): not used on {modality}")
    return warnings
