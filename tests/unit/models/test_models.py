"""Patient-grouped splitting, the model pipeline, and evaluation metrics."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radflow.config import TrainSettings
from radflow.models.candidates import feature_pipeline, grouped_cv_auc
from radflow.models.metrics import Evaluation, evaluate
from radflow.models.splits import patient_split, three_way_split

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[list[str], list[int]]:
    """Rows of (patient, label), each patient with one label and at least 2 patients per class."""
    n_patients = draw(st.integers(min_value=4, max_value=30))
    extra = draw(st.lists(st.integers(0, 1), min_size=n_patients - 4, max_size=n_patients - 4))
    patient_labels = [0, 0, 1, 1, *extra]
    rows = draw(st.lists(st.integers(0, n_patients - 1), min_size=0, max_size=60))
    patients_of_rows = list(range(n_patients)) + rows  # every patient has at least one row
    order = draw(st.permutations(patients_of_rows))
    return [f"P{p:03d}" for p in order], [patient_labels[p] for p in order]


@given(cohorts(), st.sampled_from([0.2, 0.25, 1 / 3, 0.5]), st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_patient_never_in_both_sets(
    cohort: tuple[list[str], list[int]], test_fraction: float, seed: int
) -> None:
    patients, labels = cohort
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: small classes vs n_splits
        train, test = patient_split(patients, labels, test_fraction, seed)
    assert len(test) > 0 and len(train) > 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(patients)))
    assert not {patients[i] for i in train} & {patients[i] for i in test}
    assert {labels[i] for i in test} == {0, 1}


def test_patient_split_is_deterministic_by_seed() -> None:
    patients = [f"P{i // 2}" for i in range(80)]
    labels = [(i // 2) % 2 for i in range(80)]
    a = patient_split(patients, labels, 0.25, seed=1)
    b = patient_split(patients, labels, 0.25, seed=1)
    c = patient_split(patients, labels, 0.25, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == 20  # 40 patients × 2 rows, a quarter held out


def test_patient_split_needs_two_patients_per_class() -> None:
    with pytest.raises(ValueError, match="2 patients of each class"):
        patient_split(["a", "a", "b", "c"], [1, 1, 0, 0], 0.25, 0)
    with pytest.raises(ValueError, match="2 patients of each class"):
        patient_split(["a", "b", "c", "d"], [0, 0, 0, 0], 0.25, 0)


def _toy(n: int, separable: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 5))
    if separable:
        x[:, 0] += 6 * y
    else:
        y = rng.permutation(y)
    return x, y


@pytest.mark.parametrize("name", ["lr", "rf", "gb"])
def test_candidates_separate_a_separable_problem(name: str) -> None:
    settings = TrainSettings(seed=3, n_estimators=50)
    x, y = _toy(200, separable=True)
    model = feature_pipeline(name, settings, x.shape[1]).fit(x[:100], y[:100])
    result = evaluate(y[100:], model.predict_proba(x[100:])[:, 1], n_train=100)
    assert result.auc == 1.0
    assert (result.n_train, result.n_test) == (100, 100)


def test_shuffled_labels_score_about_half() -> None:
    x, y = _toy(600, separable=False)
    model = feature_pipeline("rf", TrainSettings(n_estimators=50), 5).fit(x[:300], y[:300])
    result = evaluate(y[300:], model.predict_proba(x[300:])[:, 1])
    assert 0.4 < result.auc < 0.6


@pytest.mark.parametrize("name", ["lr", "rf", "gb"])
def test_candidates_are_reproducible_by_seed(name: str) -> None:
    x, y = _toy(100, separable=False)
    settings = TrainSettings(seed=5, n_estimators=20)
    p1 = feature_pipeline(name, settings, 5).fit(x, y).predict_proba(x)
    p2 = feature_pipeline(name, settings, 5).fit(x, y).predict_proba(x)
    assert np.array_equal(p1, p2)


def test_feature_selection_happens_inside_the_folds() -> None:
    """Pure noise, many features, few rows: choosing features on all rows first finds some
    that happen to match the labels, and cross-validation then reports a good AUC; selecting
    inside each fold, as the pipeline does, reports chance."""
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 2000)), np.arange(60) % 2
    groups = [f"p{i}" for i in range(60)]
    settings = TrainSettings(select_k=10)
    inside = grouped_cv_auc(feature_pipeline("lr", settings, 2000), x, y, groups, seed=0)
    assert inside is not None and inside < 0.7
    leaked = SelectKBest(f_classif, k=10).fit_transform(x, y)
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    outside = cross_val_score(
        feature_pipeline("lr", settings, 10), leaked, y, groups=groups, cv=folds, scoring="roc_auc"
    ).mean()
    assert outside > 0.85  # the leak the pipeline avoids


def test_grouped_cv_auc_needs_two_patients_per_class() -> None:
    x, y = _toy(6, separable=True)
    assert grouped_cv_auc(feature_pipeline("lr", TrainSettings(), 5), x, y, ["a"] * 6, 0) is None


def test_three_way_split_is_patient_disjoint_and_keeps_the_test_set() -> None:
    patients = [f"P{i // 2}" for i in range(80)]
    labels = [(i // 2) % 2 for i in range(80)]
    split = three_way_split(patients, labels, 0.25, 0.25, seed=4)
    parts = [{patients[i] for i in rows} for rows in (split.fit, split.validation, split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sorted(np.concatenate([split.fit, split.validation, split.test]).tolist()) == list(
        range(80)
    )
    assert np.array_equal(split.test, patient_split(patients, labels, 0.25, seed=4)[1])
    counts = split.counts(labels)
    assert counts["test"] == {"negative": 10, "positive": 10}
    assert counts["validation"] == {"negative": 8, "positive": 8}


def test_train_settings_round_trip_json() -> None:
    settings = TrainSettings(seed=7, candidates=("rf", "lr", "rf"))
    assert settings.candidates == ("rf", "lr")
    assert TrainSettings(**json.loads(settings.model_dump_json())) == settings
    with pytest.raises(ValueError):
        TrainSettings(test_fraction=0.0)
    with pytest.raises(ValueError, match="at least one candidate"):
        TrainSettings(candidates=())
    with pytest.raises(ValueError, match="low < 1 < high"):
        TrainSettings(calibration_slope=(1.5, 2.0))


def test_evaluate_threshold_and_json_round_trip() -> None:
    result = evaluate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], threshold=0.5, n_train=10)
    assert result.auc == pytest.approx(0.75)
    assert result.accuracy == pytest.approx(0.5)
    assert result.roc[0][0] == 0.0 and result.roc[1][-1] == 1.0
    assert Evaluation.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(ValueError, match="both classes"):
        evaluate([1, 1], [0.2, 0.8])


def test_calibration_slope_is_one_for_calibrated_scores_and_none_when_meaningless() -> None:
    from radflow.models.predictor import calibration_slope

    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 20000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert calibration_slope(list(y), p) == pytest.approx(1.0, abs=0.05)
    overconfident = 1 / (1 + np.exp(-3 * np.log(p / (1 - p))))
    assert calibration_slope(list(y), overconfident) == pytest.approx(1 / 3, abs=0.03)
    assert calibration_slope([0, 0, 1, 1], np.array([0.1, 0.2, 0.8, 0.9])) is None  # too few
    separated = np.r_[np.full(10, 0.2), np.full(10, 0.7)]
    assert calibration_slope([0] * 10 + [1] * 10, separated) is None


def test_platt_calibration_keeps_the_models_order_or_is_not_applied() -> None:
    from radflow.models.predictor import Calibrated, OnFeatures

    base = OnFeatures("lr", estimator=None)
    test = np.array([1e-22, 0.2, 0.4, 0.9])
    fitted = Calibrated.fit(base, np.array([0.1, 0.3, 0.6, 0.8]), [0, 0, 1, 1])
    assert fitted.method == "platt"
    assert np.all(np.diff(fitted.calibrate(test)) > 0)
    # Tied validation probabilities fit a slope of 0 (one probability for every study), rows
    # ranked backwards a negative one (the model reversed): the base model's are kept.
    for validation in ([0.34, 0.34], [1e-9, 1e-9], [0.2, 0.7]):
        kept = Calibrated.fit(base, np.array(validation), [1, 0])
        assert kept.method == "none"
        assert kept.calibrate(test).tolist() == test.tolist()


def test_stored_probabilities_keep_the_order_of_tiny_ones() -> None:
    from radflow.models.results import stored_probabilities

    stored = stored_probabilities(np.array([7.802486599102465e-19, 8.735625725588497e-22]))
    assert stored == [7.802486599e-19, 8.735625726e-22]
    assert stored_probabilities([0.12345678901234, 1.0, 0.0]) == [0.123456789, 1.0, 0.0]
    assert all(type(v) is float for v in stored)
