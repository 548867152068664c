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


def preprocess_pipelines(params: PreprocessParams) -> PreprocessPipelines:
    first: tuple[Step, ...] = (N4(),) if params.n4 else ()
    geometry = Pipeline((*first, Reorient(), Resample(params.spacing_mm), CropPad(params.shape)))
    scale: Step
    if params.normalize == "zscore":
        scale = ZScore()
    elif params.normalize == "percentile":
        scale = Percentile()
    else:
        scale = Window(params.window_level, params.window_width)
    return PreprocessPipelines(geometry, Pipeline((scale,)))


def preprocessing(params: PreprocessParams) -> dict[str, Any]:
    """What decides a volume besides its study."""
    pipelines = preprocess_pipelines(params)
    return {
        "steps": [*pipelines.geometry.describe(), *pipelines.normalise.describe()],
        "roi_threshold_hu": params.roi_threshold_hu,
        "registration": {
            "kind": params.registration,
            "working_spacing_mm": params.registration_spacing_mm,
        },
    }
