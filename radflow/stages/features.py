"""Extract: a preprocessed volume -> one feature row, `features/<v>/<hash>.json`."""

from __future__ import annotations

import json

from radflow.config import FeatureParams
from radflow.features.radiomics import extract
from radflow.keys import address
from radflow.stages.anonymize import read_manifest
from radflow.stages.volumes import QC, read_image
from radflow.store import ObjectStore


def features_address(volume: str, params: FeatureParams) -> str:
    return address("features", [volume], params.model_dump())


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
        "features": extract(image, mask, bin_width=params.bin_width),
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
