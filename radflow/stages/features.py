"""Extract: a preprocessed volume -> one feature row, `features/<v>/<hash>.json`."""

from __future__ import annotations

import json
import math

import numpy as np
import SimpleITK as sitk

from radflow.config import FeatureParams
from radflow.errors import QuarantineError
from radflow.features.radiomics import extract
from radflow.keys import address
from radflow.stages.anonymize import read_manifest
from radflow.stages.volumes import QC, read_image
from radflow.store import ObjectStore


def features_address(volume: str, params: FeatureParams) -> str:
    return address("features", [volume], params.model_dump())


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


def extract_features(store: ObjectStore, deid: str, volume: str, params: FeatureParams) -> str:
    out = features_address(volume, params)
    if store.exists(out):
        return out
    manifest = read_manifest(store, deid)
    image = read_image(store, f"{volume}/image.nii.gz")
    mask = read_image(store, f"{volume}/mask.nii.gz")
    row = {
        "study_id": manifest.study_id,
        "patient_id": manifest.patient_id,
        "deid": deid,
        "volume": volume,
        "features": require_finite(extract(image, mask, bin_width=params.bin_width), mask),
        "extraction": params.model_dump(),
    }
    store.put_text(out, json.dumps(row, indent=1, sort_keys=True))
    return out


def read_features(store: ObjectStore, key: str) -> dict[str, object]:
    row: dict[str, object] = json.loads(store.get_text(key))
    return row


def read_qc(store: ObjectStore, volume: str) -> dict[str, object]:
    qc: dict[str, object] = json.loads(store.get_text(f"{volume}/{QC}"))
    return qc
