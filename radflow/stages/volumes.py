"""Register and preprocess: a de-identified study -> `volumes/<v>/<hash>/`.

Outputs: `image.nii.gz` (HU, resampled and cropped around the ROI; what features read),
`input.nii.gz` (windowed to [0, 1]; what a network reads), `mask.nii.gz` (the ROI), and
`qc.json` (geometry, registration, warnings), written last as the commit marker.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from radflow.config import PreprocessParams
from radflow.imaging.preprocess import CropPad, Pipeline, Reorient, Resample, Window
from radflow.imaging.read import read_series
from radflow.imaging.register import resample_onto, rigid_register
from radflow.imaging.roi import lesion_mask
from radflow.keys import address
from radflow.stages.anonymize import read_manifest
from radflow.store import ObjectStore

QC = "qc.json"


def pipeline(params: PreprocessParams) -> tuple[Pipeline, Window]:
    """The HU pipeline (reorient, resample, crop/pad) and the window that follows it."""
    hu = Pipeline((Reorient(), Resample(params.spacing_mm), CropPad(params.shape)))
    return hu, Window(params.window_level, params.window_width)


def volume_address(deid: str, params: PreprocessParams) -> str:
    hu, window = pipeline(params)
    return address(
        "volumes",
        [deid],
        {
            "steps": [*hu.describe(), {"step": "Window", **window.__dict__}],
            "roi_threshold_hu": params.roi_threshold_hu,
        },
    )


def _write_image(store: ObjectStore, key: str, image: sitk.Image, tmp: Path) -> None:
    path = tmp / Path(key).name
    sitk.WriteImage(image, str(path), useCompression=True)
    store.put_file(key, path)


def _geometry(image: sitk.Image) -> dict[str, Any]:
    return {
        "size": list(image.GetSize()),
        "spacing_mm": [round(s, 6) for s in image.GetSpacing()],
        "origin_mm": [round(o, 4) for o in image.GetOrigin()],
        "direction": [round(d, 6) for d in image.GetDirection()],
    }


def build_volume(store: ObjectStore, deid: str, params: PreprocessParams) -> str:
    out = volume_address(deid, params)
    if store.exists(f"{out}/{QC}"):
        return out
    manifest = read_manifest(store, deid)
    with tempfile.TemporaryDirectory(prefix="radflow-vol-") as tmp_name:
        tmp = Path(tmp_name)
        images = []
        for entry in manifest.series:
            folder = tmp / entry.series_uid
            for obj in store.list(f"{deid}/{entry.series_uid}/"):
                store.download(obj.key, folder / obj.key.rsplit("/", 1)[1])
            images.append(read_series(sorted(folder.iterdir())))
        # The primary series has the most slices; ties go to the first series UID.
        order = sorted(range(len(images)), key=lambda i: -images[i].GetSize()[2])
        primary = images[order[0]]
        qc: dict[str, Any] = {
            "study_id": manifest.study_id,
            "series": len(images),
            "native": _geometry(primary),
            "intensity_hu": [
                float(np.min(sitk.GetArrayViewFromImage(primary))),
                float(np.max(sitk.GetArrayViewFromImage(primary))),
            ],
            "registration": [],
            "warnings": [],
        }
        mask = lesion_mask(primary, threshold_hu=params.roi_threshold_hu)
        hu, window = pipeline(params)
        image_hu, roi = hu(primary, mask)
        normalised, _ = window(image_hu, roi)
        for n, i in enumerate(order[1:], start=1):
            reg = rigid_register(primary, images[i])
            qc["registration"].append(
                {
                    "series": n,
                    "metric": round(reg.metric, 6),
                    "iterations": reg.iterations,
                    "parameters": [round(p, 4) for p in reg.transform.GetParameters()],
                }
            )
            # The secondary on the primary's preprocessed grid: for review and later stages.
            registered = resample_onto(images[i], image_hu, reg.transform)
            _write_image(
                store, f"{out}/secondary_{n}.nii.gz", sitk.Cast(registered, sitk.sitkInt16), tmp
            )
        qc["preprocessed"] = _geometry(image_hu)
        qc["roi_voxels"] = int(np.count_nonzero(sitk.GetArrayViewFromImage(roi)))
        if qc["roi_voxels"] == 0:
            qc["warnings"].append("ROI is empty after cropping")
        _write_image(store, f"{out}/image.nii.gz", sitk.Cast(image_hu, sitk.sitkInt16), tmp)
        _write_image(store, f"{out}/input.nii.gz", normalised, tmp)
        _write_image(store, f"{out}/mask.nii.gz", roi, tmp)
        store.put_text(f"{out}/{QC}", json.dumps(qc, indent=1, sort_keys=True))
    return out


def read_image(store: ObjectStore, key: str) -> sitk.Image:
    """An image from the lake (read through a temporary file: ITK reads paths, not bytes)."""
    with tempfile.TemporaryDirectory(prefix="radflow-read-") as tmp:
        path = Path(tmp) / Path(key).name
        store.download(key, path)
        image = sitk.ReadImage(str(path))
    return image
