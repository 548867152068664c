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
from radflow.imaging.qc import checkerboard_png
from radflow.imaging.read import read_series_with_warnings
from radflow.imaging.register import register, resample_onto, write_transform
from radflow.imaging.roi import lesion_mask
from radflow.keys import address
from radflow.limits import DEFAULT_MAX_SERIES_VOXELS
from radflow.stages.anonymize import read_manifest
from radflow.store import ObjectStore

QC = "qc.json"


def pipeline(params: PreprocessParams) -> tuple[Pipeline, Pipeline]:
    """The geometry pipeline (optional N4, reorient, resample, crop/pad; its output keeps the
    scanner's units, what features read) and the normalisation that makes the network input."""
    first: tuple[Step, ...] = (N4(),) if params.n4 else ()
    geometry = Pipeline((*first, Reorient(), Resample(params.spacing_mm), CropPad(params.shape)))
    scale: Step
    if params.normalize == "zscore":
        scale = ZScore()
    elif params.normalize == "percentile":
        scale = Percentile()
    else:
        scale = Window(params.window_level, params.window_width)
    return geometry, Pipeline((scale,))


def preprocessing(params: PreprocessParams) -> dict[str, Any]:
    """What decides a volume besides its study: hashed into its address, kept in its QC record
    so a model can refuse volumes prepared another way."""
    geometry, scale = pipeline(params)
    return {
        "steps": [*geometry.describe(), *scale.describe()],
        "roi_threshold_hu": params.roi_threshold_hu,
        "registration": {
            "kind": params.registration,
            "working_spacing_mm": params.registration_spacing_mm,
        },
    }


def volume_address(deid: str, params: PreprocessParams) -> str:
    return address("volumes", [deid], preprocessing(params))


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


def build_volume(
    store: ObjectStore,
    deid: str,
    params: PreprocessParams,
    max_voxels: int = DEFAULT_MAX_SERIES_VOXELS,
) -> str:
    """`max_voxels` bounds each series (see `plan_series`); it decides whether a study is
    refused, not what a built volume holds, so it is not part of the address."""
    out = volume_address(deid, params)
    if store.exists(f"{out}/{QC}"):
        return out
    manifest = read_manifest(store, deid)
    with tempfile.TemporaryDirectory(prefix="radflow-vol-") as tmp_name:
        tmp = Path(tmp_name)
        images = []
        warnings: list[str] = []
        for entry in manifest.series:
            folder = tmp / entry.series_uid
            for obj in store.list(f"{deid}/{entry.series_uid}/"):
                store.download(obj.key, folder / obj.key.rsplit("/", 1)[1])
            image, read_warnings = read_series_with_warnings(sorted(folder.iterdir()), max_voxels)
            images.append(image)
            warnings.extend(read_warnings)
        # The primary series has the most slices; ties go to the first series UID.
        order = sorted(range(len(images)), key=lambda i: -images[i].GetSize()[2])
        primary = images[order[0]]
        modality = manifest.series[order[0]].modality
        qc: dict[str, Any] = {
            "study_id": manifest.study_id,
            "series": len(images),
            "native": _geometry(primary),
            "intensity_hu": [
                float(np.min(sitk.GetArrayViewFromImage(primary))),
                float(np.max(sitk.GetArrayViewFromImage(primary))),
            ],
            "registration": [],
            "warnings": warnings,
            "preprocessing": preprocessing(params),
        }
        mask = lesion_mask(primary, threshold_hu=params.roi_threshold_hu)
        geometry, scale = pipeline(params)
        image_hu, roi = geometry(primary, mask)
        assert roi is not None
        normalised, _ = scale(image_hu, roi)
        # CT keeps integer Hounsfield units; anything else keeps its float values.
        stored = sitk.sitkInt16 if modality == "CT" else sitk.sitkFloat32
        for n, i in enumerate(order[1:], start=1):
            reg = register(
                primary,
                images[i],
                kind=params.registration,
                working_spacing_mm=params.registration_spacing_mm,
            )
            qc["registration"].append(
                {
                    "series": n,
                    "kind": reg.kind,
                    "metric": round(reg.metric, 6),
                    "iterations": reg.iterations,
                    "parameters": [round(p, 4) for p in reg.transform.GetParameters()],
                }
            )
            # The secondary on the primary's preprocessed grid, its transform (fixed -> moving
            # physical points, ITK's convention) and a checkerboard for a person to check.
            registered = resample_onto(images[i], image_hu, reg.transform)
            _write_image(store, f"{out}/secondary_{n}.nii.gz", sitk.Cast(registered, stored), tmp)
            store.put_file(f"{out}/secondary_{n}.tfm", write_transform(reg, tmp / f"s{n}.tfm"))
            lo = params.window_level - params.window_width / 2
            window = (lo, lo + params.window_width) if modality == "CT" else None
            png = checkerboard_png(image_hu, registered, window=window)
            store.put_bytes(f"{out}/registration_{n}.png", png)
        qc["preprocessed"] = _geometry(image_hu)
        qc["roi_voxels"] = int(np.count_nonzero(sitk.GetArrayViewFromImage(roi)))
        if qc["roi_voxels"] == 0:
            qc["warnings"].append("ROI is empty after cropping")
        _write_image(store, f"{out}/image.nii.gz", sitk.Cast(image_hu, stored), tmp)
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
