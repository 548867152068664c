"""What an ROI taken from a synthetic study's annotation must hold on the preprocessed grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from radflow.config import PreprocessParams
from radflow.imaging.pipelines import preprocess_pipelines
from radflow.imaging.read import read_series_with_warnings
from radflow.synth import SynthSpec, SynthStudy


def expected_roi_voxels(study: SynthStudy, spec: SynthSpec, params: PreprocessParams) -> int:
    """The synthetic lesion's exact voxels (what its SEG or RTSTRUCT outlines) put through the
    preprocess stage's own geometry pipeline with its primary series: the voxel count an ROI
    taken from the annotation has after preprocessing."""
    assert study.truth is not None
    truth = study.truth.mask()
    primary, _ = read_series_with_warnings(list(study.files[: spec.slices]))
    # The truth is (z, y, x) from the lowest slice up, as the reader stacks the series: its
    # voxels are the lesion's (soft tissue or brighter), not air or lung.
    assert sitk.GetArrayViewFromImage(primary)[truth].mean() > 15
    mask = sitk.GetImageFromArray(truth.astype(np.uint8))
    mask.CopyInformation(primary)
    _, roi = preprocess_pipelines(params, "CT").geometry(primary, mask)
    assert roi is not None
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(roi)))
