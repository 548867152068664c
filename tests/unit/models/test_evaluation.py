"""The fuller evaluation: threshold choice, bootstrap AUC CI, `Report` and its plots."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from radflow.models.evaluation import (
    Report,
    _weighted_aucs,
    bootstrap_auc_ci,
    choose_threshold,
    evaluate_report,
    group_resample_indices,
)
from radflow.models.plots import calibration_png, confusion_png, pr_png, roc_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_BOOT = 50  # enough for the tests, small enough to keep them fast


def scored(
    n: int, seed: int, separation: float = 1.0
) -> tuple[NDArray[np.int_], NDArray[np.float64]]:
    """Labels with both classes and probabilities that are informative but imperfect."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]
    logits = separation * (2 * y - 1) + rng.normal(size=n)
    return y, 1.0 / (1.0 + np.exp(-logits))


@st.composite
def labelled_scores(draw: st.DrawFn) -> tuple[list[int], list[float]]:
    """Both classes present; scores in [0, 1], ties allowed (rounded to 2 decimals)."""
    n = draw(st.integers(min_value=2, max_value=40))
    extra = draw(st.lists(st.integers(0, 1), min_size=n - 2, max_size=n - 2))
    y = draw(st.permutations([0, 1, *extra]))
    p = draw(
        st.lists(
            st.floats(0, 1, allow_nan=False).map(lambda v: round(v, 2)), min_size=n, max_size=n
        )
    )
    return list(y), p


def check_against_sklearn(
    y: list[int] | NDArray[np.int_], p: list[float] | NDArray[np.float64], t: float
) -> None:
    # 12 resamples: for n = 2 the draws for seed 0 are fixed and include both rows; from
    # n = 3 on, all 12 being single-class has probability below 1e-5.
    report = evaluate_report(y, p, threshold=t, n_boot=12)
    pred = (np.asarray(p) >= t).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(y, pred, labels=[0, 1])
    assert report.confusion == ((tn, fp), (fn, tp))
    assert report.auc == pytest.approx(roc_auc_score(y, p))
    assert report.pr_auc == pytest.approx(average_precision_score(y, p))
    assert report.accuracy == pytest.approx(accuracy_score(y, pred))
    assert report.precision == pytest.approx(precision_score(y, pred, zero_division=0.0))
    assert report.recall == pytest.approx(recall_score(y, pred))
    assert report.f1 == pytest.approx(f1_score(y, pred, zero_division=0.0))
    assert report.brier == pytest.approx(brier_score_loss(y, p))
    assert report.specificity == pytest.approx(tn / (tn + fp))  # by hand
    assert report.n == len(y)
    assert report.n_positive == int(np.sum(y))
    assert report.threshold == t


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_metrics_match_sklearn_seeded(seed: int, threshold: float) -> None:
    y, p = scored(60 + 10 * seed, seed)
    check_against_sklearn(y, p, threshold)


@given(labelled_scores(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
@settings(max_examples=40, deadline=None)
def test_metrics_match_sklearn_hypothesis(data: tuple[list[int], list[float]], t: float) -> None:
    y, p = data
    check_against_sklearn(y, p, t)


def test_report_is_json_round_trippable() -> None:
    y, p = scored(80, 1)
    report = evaluate_report(y, p, threshold=0.5, n_boot=N_BOOT)
    text = json.dumps(report.to_dict())
    assert Report.from_dict(json.loads(text)) == report
    assert json.loads(json.dumps(asdict(report))) == report.to_dict()
    lo, hi = report.auc_ci
    assert lo <= report.auc <= hi
    assert len(report.calibration[0]) == len(report.calibration[1]) <= 5
    assert all(0.0 <= v <= 1.0 for v in report.calibration[0] + report.calibration[1])
    assert report.roc[0][0] == 0.0 and report.roc[1][-1] == 1.0


def test_youden_hand_made_case() -> None:
    # 5 negatives, 3 positives. Cut at 0.7: TPR 2/3, FPR 0 (J .667); at 0.5: TPR 1, FPR 1/5
    # (J .8, the maximum); at 0.4: TPR 1, FPR 2/5.
    y = [0, 0, 0, 0, 1, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert choose_threshold(y, p) == 0.5
    assert choose_threshold(y, p, rule="youden") == 0.5


def test_youden_tie_goes_to_highest_threshold() -> None:
    # J = 2/3 both at 0.7 (TPR 2/3, FPR 0) and at 0.4 (TPR 1, FPR 1/3).
    y = [0, 0, 1, 0, 1, 1]
    p = [0.1, 0.2, 0.4, 0.6, 0.7, 0.8]
    assert choose_threshold(y, p) == 0.7


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_sensitivity_rule_reaches_target_at_highest_threshold(seed: int, target: float) -> None:
    y, p = scored(120, seed)
    t = choose_threshold(y, p, rule="sensitivity", target_sensitivity=target)
    positives = p[y == 1]
    assert np.mean(positives >= t) >= target
    higher = p[p > t]
    if higher.size:  # the next higher cut misses the target
        assert np.mean(positives >= higher.min()) < target


def test_sensitivity_rule_rejects_bad_target() -> None:
    y, p = scored(30, 0)
    with pytest.raises(ValueError, match="target_sensitivity"):
        choose_threshold(y, p, rule="sensitivity", target_sensitivity=0.0)
    with pytest.raises(ValueError, match="rule"):
        choose_threshold(y, p, rule="bogus")  # type: ignore[arg-type]


def test_bootstrap_ci_contains_auc_and_is_deterministic() -> None:
    y, p = scored(150, 3)
    auc = roc_auc_score(y, p)
    ci = bootstrap_auc_ci(y, p, n_boot=N_BOOT, seed=7)
    assert ci[0] <= auc <= ci[1]
    assert bootstrap_auc_ci(y, p, n_boot=N_BOOT, seed=7) == ci
    assert bootstrap_auc_ci(y, p, n_boot=N_BOOT, seed=8) != ci


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 40),
    decimals=st.integers(0, 3),
)
def test_each_resamples_auc_is_roc_auc_score_of_that_resample(
    seed: int, n: int, decimals: int
) -> None:
    # Ties (rounded scores) and repeated rows are where a rank formula goes wrong.
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    p = np.round(rng.random(n), decimals)
    draws = rng.integers(0, n, size=(25, n))
    counts = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float)
    expected = [roc_auc_score(y[d], p[d]) for d in draws if 0 < y[d].sum() < n]
    np.testing.assert_allclose(_weighted_aucs(y, p, counts), expected, rtol=0, atol=1e-12)


def test_bootstrap_ci_narrows_as_n_grows() -> None:
    widths = []
    for n in (40, 400, 4000):
        y, p = scored(n, 11)
        lo, hi = bootstrap_auc_ci(y, p, n_boot=N_BOOT, seed=0)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_skips_single_class_resamples() -> None:
    # One positive in 10: many resamples miss it; those are skipped, not an error.
    y = [0] * 9 + [1]
    p = [0.1 * i for i in range(10)]
    lo, hi = bootstrap_auc_ci(y, p, n_boot=N_BOOT, seed=0)
    assert 0.0 <= lo <= hi <= 1.0


def test_group_resample_keeps_pairs_together() -> None:
    n_groups = 25
    groups = np.repeat([f"P{i:02d}" for i in range(n_groups)], 2)  # rows 2k, 2k+1: patient k
    perm = np.random.default_rng(0).permutation(groups.size)
    groups = groups[perm]  # rows of a patient need not be adjacent
    for seed in range(50):
        idx = group_resample_indices(groups, np.random.default_rng(seed))
        assert idx.size == groups.size
        counts = np.bincount(idx, minlength=groups.size)
        for patient in np.unique(groups):
            a, b = np.flatnonzero(groups == patient)
            assert counts[a] == counts[b]  # both rows drawn equally often


def test_group_bootstrap_with_singleton_groups_equals_row_bootstrap() -> None:
    y, p = scored(60, 5)
    rows = bootstrap_auc_ci(y, p, n_boot=N_BOOT, seed=4)
    assert bootstrap_auc_ci(y, p, n_boot=N_BOOT, seed=4, groups=np.arange(60)) == rows


def test_group_bootstrap_is_deterministic_and_differs_from_rows() -> None:
    y, p = scored(40, 6)
    y2, p2 = np.repeat(y, 2), np.repeat(p, 2)
    groups = np.repeat(np.arange(40), 2)
    grouped = bootstrap_auc_ci(y2, p2, n_boot=N_BOOT, seed=1, groups=groups)
    assert bootstrap_auc_ci(y2, p2, n_boot=N_BOOT, seed=1, groups=groups) == grouped
    rows = bootstrap_auc_ci(y2, p2, n_boot=N_BOOT, seed=1)
    # Treating duplicated rows as independent understates the uncertainty.
    assert grouped[1] - grouped[0] > rows[1] - rows[0]
    report = evaluate_report(y2, p2, threshold=0.5, groups=groups, n_boot=N_BOOT, seed=1)
    assert report.auc_ci == grouped


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], "one class"),
        ([0, 0], [0.2, 0.5], "one class"),
        ([0, 1, 1], [0.2, 0.5], "length mismatch"),
        ([0, 1], [0.2, float("nan")], "non-finite"),
        ([0, 1], [0.2, float("inf")], "non-finite"),
        ([0, 1], [0.2, 1.5], r"\[0, 1\]"),
        ([0, 2], [0.2, 0.5], "binary"),
    ],
)
def test_invalid_input_raises(y: list[int], p: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_report(y, p, threshold=0.5, n_boot=10)
    with pytest.raises(ValueError, match=match):
        choose_threshold(y, p)
    with pytest.raises(ValueError, match=match):
        bootstrap_auc_ci(y, p, n_boot=10)


def test_groups_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        bootstrap_auc_ci([0, 1, 0], [0.1, 0.9, 0.3], n_boot=10, groups=["a", "b"])


@pytest.fixture(scope="module")
def report() -> Report:
    y, p = scored(80, 2)
    return evaluate_report(y, p, threshold=0.5, n_boot=N_BOOT)


@pytest.mark.parametrize("plot", [roc_png, pr_png, calibration_png, confusion_png])
def test_pngs_are_deterministic(plot: object, report: Report) -> None:
    assert callable(plot)
    first = plot(report, "Test model")
    second = plot(Report.from_dict(json.loads(json.dumps(report.to_dict()))), "Test model")
    assert isinstance(first, bytes)
    assert first.startswith(PNG_SIGNATURE)
    assert first == second
    assert first != plot(report, "Other title")
