"""Segmentation metrics on geometry whose answers are known by hand, and the patient bootstrap."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from support.realdata import pyradiomics_case

from radflow.segmentation.metrics import (
    CaseMetrics,
    SegmentationSummary,
    case_metrics,
    summarise,
)

SPACING = (3.0, 0.75, 0.8)  # (z, y, x) mm: thick slices, anisotropic in-plane too


def box(shape: tuple[int, int, int], *extent: tuple[int, int]) -> np.ndarray:
    """A boolean array, true on the half-open (start, stop) ranges along z, y, x."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in extent)] = True
    return mask


CUBE_SHAPE = (20, 40, 40)


def cube(z: int, y: int, x: int, side: int = 10) -> np.ndarray:
    return box(CUBE_SHAPE, (z, z + side), (y, y + side), (x, x + side))


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_shifted_cube_dice_and_hd95(axis: int, k: int) -> None:
    # A cube moved by k voxels along one axis: the overlap is (10 - k)/10 of each, and every
    # boundary voxel of one lies within k voxels (k * spacing mm) of the other, the moved faces
    # (a sixth of the boundary, more than 5 %) exactly that far.
    start = [5, 15, 15]
    moved = list(start)
    moved[axis] += k
    c = case_metrics(cube(*start), cube(*moved), SPACING)
    assert c.dice == pytest.approx((10 - k) / 10, abs=1e-9)
    assert c.hd95_mm == pytest.approx(k * SPACING[axis], abs=1e-4)
    assert c.detected is True
    assert c.false_positive_ml == 0.0
    voxel_ml = math.prod(SPACING) / 1000
    assert c.truth_ml == c.predicted_ml == pytest.approx(1000 * voxel_ml, abs=1e-4)


def test_concentric_boxes_hd95_is_the_thick_slice_gap() -> None:
    # Outer box 8 slices x 80 x 80, inner one voxel smaller on every side, on 3 x 0.75 x 0.75
    # mm voxels. The top and bottom faces are 3 mm apart, the sides 0.75 mm; only the faces'
    # rims (under 5 % of the boundary) are farther, up to the corners' sqrt(9 + 2 * 0.5625).
    spacing = (3.0, 0.75, 0.75)
    shape = (10, 84, 84)
    outer = box(shape, (1, 9), (2, 82), (2, 82))
    inner = box(shape, (2, 8), (3, 81), (3, 81))
    c = case_metrics(outer, inner, spacing, tolerance_mm=2.9)
    assert c.hd95_mm == 3.0
    assert c.dice == pytest.approx(2 * 6 * 78**2 / (6 * 78**2 + 8 * 80**2), abs=5e-5)
    assert c.truth_ml == pytest.approx(8 * 80 * 80 * 3 * 0.75 * 0.75 / 1000, abs=1e-4)
    # Within the corner distance everything matches; under the in-plane gap nothing does;
    # between them, the sides match and the 3 mm caps do not.
    corner = math.sqrt(3.0**2 + 2 * 0.75**2)
    assert case_metrics(outer, inner, spacing, tolerance_mm=corner + 0.01).surface_dice == 1.0
    assert case_metrics(outer, inner, spacing, tolerance_mm=0.7).surface_dice == 0.0
    assert 0.0 < c.surface_dice < 1.0


def test_surface_dice_is_one_within_tolerance_and_lower_outside() -> None:
    a = cube(5, 15, 15)
    two_x = cube(5, 15, 17)  # 2 * 0.8 = 1.6 mm
    three_x = cube(5, 15, 18)  # 2.4 mm
    assert case_metrics(a, two_x, SPACING, tolerance_mm=2.0).surface_dice == 1.0
    beyond = case_metrics(a, three_x, SPACING, tolerance_mm=2.0).surface_dice
    assert 0.0 < beyond < 1.0
    assert case_metrics(a, three_x, SPACING, tolerance_mm=2.5).surface_dice == 1.0
    # The same shift of one voxel is 3 mm across slices: outside 2 mm, inside 3 mm.
    one_z = cube(6, 15, 15)
    assert case_metrics(a, one_z, SPACING, tolerance_mm=2.0).surface_dice < 1.0
    assert case_metrics(a, one_z, SPACING, tolerance_mm=3.0).surface_dice == 1.0


def test_extra_blob_is_false_positive_volume_and_detection_still_counts() -> None:
    truth = cube(5, 5, 5)
    blob = box(CUBE_SHAPE, (2, 5), (30, 34), (30, 35))  # 3 x 4 x 5 = 60 voxels, far away
    matching = cube(6, 6, 6)
    c = case_metrics(truth, matching | blob, SPACING)
    voxel_ml = math.prod(SPACING) / 1000
    assert c.detected is True
    assert c.false_positive_ml == pytest.approx(60 * voxel_ml, abs=1e-4)
    assert c.predicted_ml == pytest.approx((1000 + 60) * voxel_ml, abs=1e-4)
    # The blob's 54 boundary voxels are a tenth of the prediction's boundary, so HD95 reaches
    # them; without it, the one-voxel offset's 3 mm across slices.
    assert case_metrics(truth, matching, SPACING).hd95_mm == 3.0
    assert c.hd95_mm is not None and c.hd95_mm > 15.0


def test_blob_touching_the_truth_by_a_corner_is_not_a_false_positive() -> None:
    truth = cube(5, 5, 5)
    # Overlaps the truth in its corner voxel (14, 14, 14): one component, matched.
    predicted = box(CUBE_SHAPE, (14, 18), (14, 18), (14, 18))
    c = case_metrics(truth, predicted, SPACING)
    assert c.detected is True
    assert c.false_positive_ml == 0.0
    # 26-connected: a blob meeting the matched one only at a corner is part of it.
    diagonal = box(CUBE_SHAPE, (18, 19), (18, 19), (18, 19))
    assert case_metrics(truth, predicted | diagonal, SPACING).false_positive_ml == 0.0


def test_missed_lesion_is_not_detected_and_all_prediction_is_false_positive() -> None:
    truth = cube(2, 2, 2, side=5)
    predicted = cube(10, 25, 25, side=5)
    c = case_metrics(truth, predicted, SPACING)
    assert c.detected is False
    assert c.dice == 0.0
    assert c.false_positive_ml == c.predicted_ml > 0
    assert c.hd95_mm is not None and c.hd95_mm > 0


def test_empty_mask_conventions() -> None:
    empty = np.zeros(CUBE_SHAPE, dtype=np.uint8)
    lesion = cube(5, 5, 5).astype(np.uint8)
    both = case_metrics(empty, empty, SPACING)
    assert (both.dice, both.surface_dice, both.hd95_mm, both.detected) == (1.0, 1.0, None, None)
    assert both.false_positive_ml == both.truth_ml == both.predicted_ml == 0.0
    missed = case_metrics(lesion, empty, SPACING)
    assert (missed.dice, missed.surface_dice, missed.hd95_mm, missed.detected) == (
        0.0,
        0.0,
        None,
        False,
    )
    spurious = case_metrics(empty, lesion, SPACING)
    assert (spurious.dice, spurious.surface_dice, spurious.hd95_mm, spurious.detected) == (
        0.0,
        0.0,
        None,
        None,
    )
    assert spurious.false_positive_ml == spurious.predicted_ml > 0
    # JSON-friendly: no NaN anywhere, and it reads back equal.
    for c in (both, missed, spurious):
        text = c.model_dump_json()
        assert "NaN" not in text
        assert CaseMetrics.model_validate_json(text) == c


def test_label_values_are_masks_and_bad_input_is_refused() -> None:
    truth = cube(5, 5, 5).astype(np.int16) * 7
    assert case_metrics(truth, truth, SPACING).dice == 1.0
    with pytest.raises(ValueError, match="one shape"):
        case_metrics(truth, truth[:-1], SPACING)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(truth, truth, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        case_metrics(truth, truth, SPACING, tolerance_mm=-1.0)


def test_metrics_do_not_depend_on_the_empty_margin_around_the_masks() -> None:
    # Masks touching the array's faces, then the same masks inside a larger empty array.
    shape = (6, 20, 20)
    truth = box(shape, (0, 4), (0, 8), (3, 9))
    predicted = box(shape, (1, 6), (2, 10), (0, 7)) | box(shape, (5, 6), (19, 20), (19, 20))
    spacing = (2.0, 1.0, 0.5)
    tight = case_metrics(truth, predicted, spacing)
    assert tight.false_positive_ml == pytest.approx(spacing[0] * spacing[1] * spacing[2] / 1000)
    padded = case_metrics(np.pad(truth, 3), np.pad(predicted, 3), spacing)
    assert padded == tight


@pytest.mark.parametrize(("shift", "axis"), [(2, 2), (-3, 1), (1, 0)])
def test_real_nodule_annotation_moved_by_a_known_offset(shift: int, axis: int) -> None:
    # pyradiomics' lung2: a radiologist's outline on a real CT (5 mm slices). Every boundary
    # point of a copy moved by d mm lies within d mm of the original's, so HD95 <= d and the
    # surface Dice at tolerance d is 1; no voxel of the copy is a false positive.
    _, label_path = pyradiomics_case("lung2")
    label = sitk.ReadImage(str(label_path))
    truth = sitk.GetArrayFromImage(label) != 0
    sx, sy, sz = label.GetSpacing()
    spacing = (sz, sy, sx)
    offset_mm = abs(shift) * spacing[axis]
    moved = np.roll(truth, shift, axis=axis)
    c = case_metrics(truth, moved, spacing, tolerance_mm=offset_mm + 1e-3)
    assert c.hd95_mm is not None and 0.0 < c.hd95_mm <= offset_mm + 1e-4
    assert c.surface_dice == 1.0
    assert 0.5 < c.dice < 1.0
    assert c.detected is True and c.false_positive_ml == 0.0
    assert (
        c.truth_ml == c.predicted_ml == pytest.approx(truth.sum() * sx * sy * sz / 1000, abs=1e-4)
    )
    assert case_metrics(truth, moved, spacing, tolerance_mm=0.5 * offset_mm).surface_dice < 1.0


def _case(dice: float, hd95: float | None = 1.0, detected: bool | None = True) -> CaseMetrics:
    return CaseMetrics(
        dice=dice,
        hd95_mm=hd95,
        surface_dice=dice,
        tolerance_mm=2.0,
        detected=detected,
        false_positive_ml=1.0 - dice,
        truth_ml=1.0,
        predicted_ml=1.0,
    )


def _spread_cases() -> tuple[list[CaseMetrics], list[str]]:
    rng = np.random.default_rng(7)
    dices = rng.uniform(0.5, 0.95, size=30)
    cases = [_case(round(float(d), 4), hd95=round(10 * (1 - float(d)), 4)) for d in dices]
    return cases, [f"P{i // 2:02d}" for i in range(30)]


def test_summary_means_and_cis_contain_the_mean() -> None:
    cases, patients = _spread_cases()
    s = summarise(cases, patients, n_boot=500, seed=1)
    assert (s.n_cases, s.n_patients, s.n_boot, s.seed, s.tolerance_mm) == (30, 15, 500, 1, 2.0)
    mean_dice = np.mean([c.dice for c in cases])
    assert s.dice.mean == pytest.approx(mean_dice, abs=5e-5)
    for metric in (s.dice, s.hd95_mm, s.surface_dice, s.false_positive_ml):
        assert metric.ci is not None and metric.mean is not None
        lo, hi = metric.ci
        assert lo < metric.mean < hi
        assert metric.n_cases == 30
    # Every case detected: the rate and its interval are exactly 1.
    assert s.detection_rate.mean == 1.0 and s.detection_rate.ci == (1.0, 1.0)
    assert "NaN" not in s.model_dump_json()
    assert SegmentationSummary.model_validate_json(s.model_dump_json()) == s
    assert json.loads(s.model_dump_json())["dice"]["ci"] == list(s.dice.ci or ())


def test_summary_is_reproducible_by_seed() -> None:
    cases, patients = _spread_cases()
    first = summarise(cases, patients, n_boot=300, seed=3)
    assert summarise(cases, patients, n_boot=300, seed=3) == first
    assert summarise(cases, patients, n_boot=300, seed=4).dice.ci != first.dice.ci


def test_ci_is_degenerate_when_all_patients_are_equal() -> None:
    cases = [_case(0.7)] * 12
    s = summarise(cases, [f"P{i}" for i in range(12)], n_boot=200)
    assert s.dice.mean == 0.7 and s.dice.ci == (0.7, 0.7)
    assert s.false_positive_ml.ci == (0.3, 0.3)


def test_bootstrap_resamples_patients_not_cases() -> None:
    # Ten cases of one patient with Dice 0 and ten patients with one case of Dice 1 each.
    # Drawing 11 patients leaves out the big one in (10/11)^11 = 35 % of resamples, whose
    # mean is then exactly 1: the upper bound is 1. Drawing the 20 cases one by one instead
    # gives means near 0.5 and an upper bound near 0.7.
    cases = [_case(0.0)] * 10 + [_case(1.0)] * 10
    by_patient = summarise(cases, ["big"] * 10 + [f"P{i}" for i in range(10)], n_boot=1000)
    by_case = summarise(cases, [f"C{i}" for i in range(20)], n_boot=1000)
    assert by_patient.dice.mean == by_case.dice.mean == 0.5
    assert by_patient.dice.ci is not None and by_case.dice.ci is not None
    assert by_patient.dice.ci[1] == 1.0
    assert by_case.dice.ci[1] < 0.8
    assert by_patient.n_patients == 11 and by_case.n_patients == 20


def test_undefined_values_are_left_out_and_none_when_never_defined() -> None:
    cases = [_case(0.8, hd95=2.0), _case(0.0, hd95=None, detected=False), _case(1.0, None, None)]
    s = summarise(cases, ["A", "B", "C"], n_boot=200)
    assert s.hd95_mm.mean == 2.0 and s.hd95_mm.n_cases == 1
    assert s.detection_rate.mean == 0.5 and s.detection_rate.n_cases == 2
    assert s.dice.n_cases == 3
    never = summarise([_case(1.0, None, None)], ["A"], n_boot=10)
    assert never.hd95_mm.mean is None and never.hd95_mm.ci is None
    assert never.detection_rate.n_cases == 0


def test_summary_refuses_mismatched_input() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        summarise([_case(1.0)], ["A", "B"])
    with pytest.raises(ValueError, match="no cases"):
        summarise([], [])
    other = _case(1.0).model_copy(update={"tolerance_mm": 1.0})
    with pytest.raises(ValueError, match="tolerances"):
        summarise([_case(1.0), other], ["A", "B"])
