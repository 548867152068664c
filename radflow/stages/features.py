"""Extract: a preprocessed volume -> one feature row, `features/<v>/<hash>` (JSON)."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from radflow.config import FeatureParams, Settings
from radflow.errors import QuarantineError
from radflow.features.radiomics import extract
from radflow.keys import address as content_address
from radflow.lake import Lake
from radflow.lake.records import FeatureRow

NAME = "features"


def features_address(volume: str, params: FeatureParams) -> str:
    return content_address("features", [volume], params.model_dump())


def address(settings: Settings, volume: str, deid: str) -> str:
    return features_address(volume, settings.features)


def run(lake: Lake, settings: Settings, volume: str, deid: str) -> str:
    """`deid` names the study the row records (its pseudonyms; volumes v3 do not hold them)."""
    return extract_features(lake, volume, deid, settings.features)


def require_finite(features: dict[str, float], mask: sitk.Image) -> dict[str, float]:
    """A row every model can take. IBSI defines some features as NaN on a region too small for
    them (texture on a few voxels); such a study is set aside here rather than break training
    or scoring later (scikit-learn refuses NaN)."""
    bad = sorted(name for name, value in features.items() if not math.isfinite(value))
    if bad:
        voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
        raise QuarantineError(
            "features not finite",
            f"{len(bad)} features are NaN or infinite (e.g. {bad[0]}); the ROI has {voxels} voxels",
        )
    return features


def extract_features(lake: Lake, volume: str, deid: str, params: FeatureParams) -> str:
    out = features_address(volume, params)
    if lake.has(out):
        return out
    manifest = lake.manifest(deid)
    image, mask = lake.image(volume, "image"), lake.image(volume, "mask")
    row = FeatureRow(
        study_id=manifest.study_id,
        patient_id=manifest.patient_id,
        deid=deid,
        volume=volume,
        features=require_finite(extract(image, mask, bin_width=params.bin_width), mask),
        extraction=params.model_dump(),
        roi_source=lake.qc(volume).roi_source,
    )
    lake.put_feature_row(out, row)
    return out
