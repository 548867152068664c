"""radflow's features on pyradiomics' real cases, beside pyradiomics' published baseline.

Used by tests/unit/features/test_pyradiomics_agreement.py and bench/pyradiomics_agreement.py.
The extraction settings are read from the baseline's own `diagnostics_Configuration_Settings`
row (binWidth 25, voxelArrayShift 2000, label 1, no resampling for the plain columns), so
radflow runs with the settings pyradiomics ran with.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from radflow.features.inputs import crop_to_mask
from radflow.features.radiomics import extract
from support.realdata import pyradiomics_baseline, pyradiomics_case

#: The feature classes pyradiomics enables by default, as its baseline files name them.
CLASSES = ("firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm")

#: Voxels kept around the mask's bounding box when cropping (pyradiomics' padDistance).
PAD = 5


@dataclass(frozen=True)
class CaseResult:
    """radflow's features of one case and the settings they were extracted with."""

    case: str
    settings: dict[str, Any]
    features: dict[str, float]
    voxels: int


def baseline_settings(case: str, feature_class: str = "firstorder") -> dict[str, Any]:
    """The settings pyradiomics used for `case`'s plain column of `feature_class`."""
    text = pyradiomics_baseline(feature_class)[case]["diagnostics_Configuration_Settings"]
    settings: dict[str, Any] = ast.literal_eval(text)
    return settings


def cropped_case(case: str, label: int) -> tuple[sitk.Image, sitk.Image]:
    """The case's image and its `label` as a 0/1 mask, cropped to the mask's bounding box
    plus PAD voxels (the lung CTs are 512 x 512 x 48-61; features do not depend on the
    crop, which keeps the test fast)."""
    image_path, label_path = pyradiomics_case(case)
    image, labels = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
    mask = sitk.Cast(sitk.Equal(labels, label), sitk.sitkUInt8)
    return crop_to_mask(image, mask, PAD)


def radflow_case(case: str) -> CaseResult:
    """radflow's full feature set on `case`, with the baseline's settings."""
    settings = baseline_settings(case)
    assert settings["resampledPixelSpacing"] is None and not settings["normalize"]
    assert settings["distances"] == [1] and settings["gldm_a"] == 0
    image, mask = cropped_case(case, int(settings["label"]))
    features = extract(
        image,
        mask,
        bin_width=float(settings["binWidth"]),
        voxel_array_shift=float(settings["voxelArrayShift"]),
    )
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return CaseResult(case, settings, features, voxels)


def relative_differences(result: CaseResult, feature_class: str) -> dict[str, float]:
    """|radflow - pyradiomics| / |pyradiomics| for every baseline feature of the class
    (the absolute difference where the baseline value is 0)."""
    baseline = pyradiomics_baseline(feature_class)[result.case]
    out: dict[str, float] = {}
    for name, text in baseline.items():
        if not name.startswith("original_"):
            continue
        expected, actual = float(text), result.features[name]
        diff = abs(actual - expected)
        out[name] = diff / abs(expected) if expected else diff
    return out
