"""Patient-grouped splitting, the model pipeline, and evaluation metrics."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radflow.models.metrics import Evaluation, evaluate
from radflow.models.train import TrainParams, build_model, patient_split

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


def test_separable_problem_scores_auc_one() -> None:
    params = TrainParams(seed=3, n_estimators=50)
    x, y = _toy(200, separable=True)
    model = build_model(params).fit(x[:100], y[:100])
    result = evaluate(y[100:], model.predict_proba(x[100:])[:, 1], n_train=100)
    assert result.auc == 1.0
    assert result.accuracy == 1.0
    assert (result.n_train, result.n_test) == (100, 100)


def test_shuffled_labels_score_about_half() -> None:
    x, y = _toy(600, separable=False)
    model = build_model(TrainParams(n_estimators=50)).fit(x[:300], y[:300])
    result = evaluate(y[300:], model.predict_proba(x[300:])[:, 1])
    assert 0.4 < result.auc < 0.6


def test_build_model_is_reproducible_by_seed() -> None:
    x, y = _toy(100, separable=False)
    p1 = build_model(TrainParams(seed=5, n_estimators=20)).fit(x, y).predict_proba(x)
    p2 = build_model(TrainParams(seed=5, n_estimators=20)).fit(x, y).predict_proba(x)
    assert np.array_equal(p1, p2)


def test_train_params_round_trip_json() -> None:
    params = TrainParams(seed=7)
    assert TrainParams(**json.loads(json.dumps(asdict(params)))) == params
    with pytest.raises(ValueError):
        TrainParams(test_fraction=0.0)


def test_evaluate_threshold_and_json_round_trip() -> None:
    result = evaluate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], threshold=0.5, n_train=10)
    assert result.auc == pytest.approx(0.75)
    assert result.accuracy == pytest.approx(0.5)
    assert result.roc[0][0] == 0.0 and result.roc[1][-1] == 1.0
    assert Evaluation.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(ValueError, match="both classes"):
        evaluate([1, 1], [0.2, 0.8])
