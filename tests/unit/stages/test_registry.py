"""Training, registry and scoring stages on a lake of hand-made feature rows (no DICOM): what is
chosen, what is promoted, what is reported, and what scoring refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from radflow.config import FeatureParams, PreprocessParams, TrainSettings
from radflow.errors import QuarantineError, RadflowError
from radflow.imaging.pipelines import preprocessing
from radflow.lake import FeatureRow, Lake, VolumeQC
from radflow.lake.records import CandidatePredictions, Geometry, Predictions
from radflow.models.predictor import Inputs, OnFeatures
from radflow.models.table import training_table
from radflow.stages.candidates import fit_cnn_candidate, fit_feature_candidates
from radflow.stages.dataset import build_dataset
from radflow.stages.registry import promote_if_better, register_model
from radflow.stages.score import score_study
from radflow.store import LocalStore

PREP = preprocessing(PreprocessParams())
EXTRACTION = FeatureParams().model_dump()
FEATURES_ONLY = TrainSettings(candidates=("lr", "rf", "gb"), n_estimators=50)
GRID = Geometry(size=[16, 16, 16], spacing_mm=[1.0] * 3, origin_mm=[0.0] * 3, direction=[1.0] * 9)


def _volume(label: int, rng: np.random.Generator, size: int = 16) -> sitk.Image:
    """A network input: noise, with a bright blob for positives and a dim one for negatives."""
    z, y, x = np.mgrid[:size, :size, :size]
    blob = ((z - size / 2) ** 2 + (y - size / 2) ** 2 + (x - size / 2) ** 2) < (size / 4) ** 2
    arr = rng.normal(0.3, 0.05, (size, size, size)) + blob * (0.5 if label else 0.1)
    return sitk.GetImageFromArray(arr.astype(np.float32))


def add_study(
    lake: Lake,
    study: str,
    patient: str,
    features: dict[str, float],
    label: int | None,
    prep: dict[str, Any] = PREP,
    volume: sitk.Image | None = None,
) -> str:
    """A feature row (and its volume's QC record, and its label) as the ingest would write."""
    vol = f"volumes/test/{study}"
    qc = VolumeQC(
        study_id=study,
        series=1,
        native=GRID,
        intensity_hu=[0.0, 1.0],
        registration=[],
        warnings=[],
        preprocessing=prep,
        preprocessed=GRID,
        roi_voxels=1,
    )
    lake.put_qc(vol, qc)
    if volume is not None:
        lake.put_image(vol, "input", volume)
    key = f"features/test/{study}.json"
    row = FeatureRow(
        study_id=study,
        patient_id=patient,
        deid=f"deid/test/{study}",
        volume=vol,
        features=features,
        extraction=EXTRACTION,
    )
    lake.put_feature_row(key, row)
    if label is not None:
        lake.put_label(study, label)
    return key


def cohort(lake: Lake, n: int = 120, seed: int = 0, volumes: bool = False) -> list[str]:
    """`n` patients, one study each, balanced labels. Four features each carry a weak signal
    (alone an AUC near 0.85; together near 0.97); five are noise."""
    rng = np.random.default_rng(seed)
    keys = []
    for i in range(n):
        label = i % 2
        feats = {f"signal_{j}": float(1.5 * label + rng.normal()) for j in range(4)}
        feats |= {f"noise_{j}": float(rng.normal()) for j in range(5)}
        vol = _volume(label, rng) if volumes else None
        keys.append(add_study(lake, f"s{i:03d}", f"p{i:03d}", feats, label, volume=vol))
    return keys


def train(lake: Lake, keys: list[str], settings: TrainSettings) -> str:
    data = build_dataset(lake, keys, PREP, EXTRACTION)
    return register_model(lake, data, [fit_feature_candidates(lake, data, settings)], settings)


@pytest.fixture(scope="module")
def trained_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding the default cohort and its model trained with FEATURES_ONLY, once for
    the module (a training takes 10-30 s here)."""
    root = tmp_path_factory.mktemp("cohort")
    lake = Lake(LocalStore(root / "lake"))
    train(lake, cohort(lake), FEATURES_ONLY)
    return root / "lake"


@pytest.fixture
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """An empty lake; with the parameter "trained" (`TRAINED`), a copy of `trained_cohort`'s,
    where the test's own training of the default cohort finds its model by address."""
    if getattr(request, "param", None) == "trained":
        shutil.copytree(request.getfixturevalue("trained_cohort"), tmp_path / "lake")
    return Lake(LocalStore(tmp_path / "lake"))


TRAINED = pytest.mark.parametrize("lake", ["trained"], indirect=True)


@TRAINED
def test_best_model_reaches_auc_and_becomes_champion(lake: Lake, tmp_path: Path) -> None:
    model = train(lake, cohort(lake), FEATURES_ONLY)
    card = lake.card(model)
    assert card.evaluation.auc >= 0.9
    assert card.report.auc_ci[0] <= card.report.auc <= card.report.auc_ci[1]
    chosen = [c for c in card.comparison if c.chosen]
    assert [c.candidate for c in chosen] == [card.kind]
    assert {c.candidate for c in card.comparison} == {"lr", "rf", "gb", "ensemble"}
    # The winner has the best validation AUC; the test set took no part in choosing it.
    assert chosen[0].validation_auc == max(c.validation_auc for c in card.comparison)
    counts = card.split.counts
    assert sum(c["negative"] + c["positive"] for c in counts.values()) == 120
    parts = [set(card.split.fit), set(card.split.validation), set(card.split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])

    decision = promote_if_better(lake, model, FEATURES_ONLY)
    assert decision.promoted is True and decision.reason == "no champion yet"
    assert lake.champion() == model
    # Decided once: a second call repeats the stored decision.
    assert promote_if_better(lake, model, FEATURES_ONLY) == decision


@TRAINED
def test_worse_model_is_not_promoted(lake: Lake, tmp_path: Path) -> None:
    keys = cohort(lake)
    good = train(lake, keys, FEATURES_ONLY)
    assert promote_if_better(lake, good, FEATURES_ONLY).promoted
    # One feature instead of four: the same rows, a weaker model.
    weak_settings = TrainSettings(candidates=("lr",), select_k=1)
    weak = train(lake, keys, weak_settings)
    assert lake.card(weak).evaluation.auc < lake.card(good).evaluation.auc
    decision = promote_if_better(lake, weak, weak_settings)
    assert decision.promoted is False
    assert decision.previous == good
    assert decision.previous_auc == pytest.approx(lake.card(good).evaluation.auc)
    assert decision.reason.endswith("not better")
    assert lake.champion() == good
    assert lake.decision(weak) == decision


@TRAINED
def test_margin_keeps_an_equal_model_out(lake: Lake, tmp_path: Path) -> None:
    keys = cohort(lake)
    first = train(lake, keys, FEATURES_ONLY)
    promote_if_better(lake, first, FEATURES_ONLY)
    again = TrainSettings(candidates=("lr", "rf", "gb"), n_estimators=60)
    second = train(lake, keys, again)
    assert second != first
    decision = promote_if_better(lake, second, again)
    assert decision.previous_auc is not None
    gain = decision.auc - decision.previous_auc
    assert decision.promoted is (gain > 0 and gain >= again.promotion_margin)
    assert lake.champion() == (second if decision.promoted else first)


def test_failed_sanity_check_is_never_promoted(lake: Lake, tmp_path: Path) -> None:
    strict = TrainSettings(candidates=("lr",), calibration_slope=(0.999, 1.001))
    model = train(lake, cohort(lake), strict)
    card = lake.card(model)
    assert card.sanity.checks["calibration slope within bounds"] is False
    decision = promote_if_better(lake, model, strict)
    assert decision.promoted is False
    assert decision.reason == "fails sanity checks: calibration slope within bounds"
    assert not lake.has_champion()


def test_tied_validation_probabilities_do_not_flatten_the_model(lake: Lake) -> None:
    """A handful of validation rows can all get one probability (demo-sized data did, in CI):
    Platt scaling then fits a slope of 0 and made every test study one probability, a model
    that failed "not constant" and left the demo without a champion."""
    data = build_dataset(lake, cohort(lake, n=12), PREP, EXTRACTION)
    settings = TrainSettings(candidates=("lr",))
    split = training_table(lake.dataset(data), settings).split
    ranked = [0.1 + 0.8 * i / len(split.test) for i in range(len(split.test))]
    found = CandidatePredictions(
        validation=[0.34] * len(split.validation), test=ranked, cv_auc=None
    )
    folder = "candidates/test/tied"
    lake.put_candidates(
        folder, {"lr": OnFeatures("lr", None)}, Predictions(candidates={"lr": found})
    )
    model = register_model(lake, data, [folder], settings)
    card = lake.card(model)
    assert card.calibration.method == "none"
    assert card.sanity.checks["not constant"] is True
    assert promote_if_better(lake, model, settings).promoted


@TRAINED
def test_card_records_data_fingerprint_code_and_metrics(lake: Lake, tmp_path: Path) -> None:
    keys = cohort(lake)
    model = train(lake, keys, FEATURES_ONLY)
    card = lake.card(model)
    assert set(card.fingerprint.model_dump()) == {"feature_rows", "labels"}
    assert len(card.code_version.source_sha256) == 64
    assert card.preprocessing == json.loads(json.dumps(PREP))  # as read back from JSON
    assert card.extraction == EXTRACTION
    assert card.params["candidates"] == ["lr", "rf", "gb"]
    metrics = lake.metrics(model)
    assert metrics.held_out.auc == card.evaluation.auc
    assert {"auc_ci", "pr_auc", "brier", "f1", "specificity"} <= set(metrics.held_out.model_dump())
    # Idempotent: training again on the same rows returns the entry and rewrites nothing.
    before = {o.key: o.etag for o in lake.store.list("models/")}
    assert train(lake, keys, FEATURES_ONLY) == model
    assert {o.key: o.etag for o in lake.store.list("models/")} == before
    # Another label changes the fingerprint (and so the dataset and the model).
    lake.put_label("s000", 1)
    other = lake.card(train(lake, keys, FEATURES_ONLY))
    assert other.fingerprint.labels != card.fingerprint.labels
    assert other.fingerprint.feature_rows == card.fingerprint.feature_rows


def test_labels_and_studies_that_do_not_join_are_reported(lake: Lake, tmp_path: Path) -> None:
    keys = cohort(lake, n=20)
    keys.append(add_study(lake, "unlabelled", "px", {"signal_0": 0.0}, None))
    other_prep = {**PREP, "roi_threshold_hu": -123.0}
    keys.append(add_study(lake, "stale", "py", {"signal_0": 0.0}, 1, prep=other_prep))
    lake.put_label("orphan", 0)
    data = lake.dataset(build_dataset(lake, keys, PREP, EXTRACTION))
    assert len(data.rows) == 20
    assert data.unlabelled_studies == ["unlabelled"]
    assert data.labels_without_study == ["orphan"]
    assert data.stale_studies == ["stale"]


def test_too_few_patients_is_a_clear_error(lake: Lake, tmp_path: Path) -> None:
    keys = cohort(lake, n=4)  # after the test split, one training patient per class
    data = build_dataset(lake, keys, PREP, EXTRACTION)
    with pytest.raises(RadflowError, match="cannot split 4 labelled studies by patient"):
        fit_feature_candidates(lake, data, FEATURES_ONLY)


@TRAINED
def test_scoring_uses_the_model_and_refuses_other_preprocessing(lake: Lake, tmp_path: Path) -> None:
    model = train(lake, cohort(lake), FEATURES_ONLY)
    card = lake.card(model)
    row = {f"signal_{j}": 1.5 for j in range(4)} | {f"noise_{j}": 0.0 for j in range(5)}
    new = add_study(lake, "new", "pn", row, None)
    result = lake.score(score_study(lake, new, model))
    assert result.model == model and result.model_id == card.model_id
    names = card.feature_names
    expected = lake.model(model).predict_proba(
        Inputs(np.array([[row[n] for n in names]], dtype=np.float64))
    )[0, 1]
    assert result.probability == pytest.approx(expected, abs=1e-6)
    assert result.positive == (result.probability >= card.evaluation.threshold)

    params = PreprocessParams(spacing_mm=(2.0, 2.0, 2.0), roi_threshold_hu=-50.0)
    odd = add_study(lake, "odd", "po", row, None, prep=preprocessing(params))
    with pytest.raises(QuarantineError) as err:
        score_study(lake, odd, model)
    assert err.value.reason == f"prepared with other settings than model {card.model_id}"
    assert "roi_threshold_hu" in err.value.detail and "steps" in err.value.detail
    assert not any("odd" in o.key for o in lake.store.list("scores/"))


def test_cnn_candidate_joins_the_ensemble_and_scores_from_volumes(
    lake: Lake, tmp_path: Path
) -> None:
    settings = TrainSettings(
        candidates=("lr", "cnn"),
        ensemble_size=2,
        cnn={"epochs": 3, "batch_size": 8, "width": 4, "device": "cpu"},
    )
    keys = cohort(lake, n=40, volumes=True)
    data = build_dataset(lake, keys, PREP, EXTRACTION)
    cnn = fit_cnn_candidate(lake, data, settings, checkpoints=tmp_path / "ckpt")
    training = lake.predictions(cnn).candidates["cnn"].training
    assert training is not None
    assert training.device == "cpu" and 1 <= training.epochs_run <= 3
    # The checkpoint stays on the worker; the registered model holds no local path.
    assert list((tmp_path / "ckpt").rglob("last.pt"))
    assert str(tmp_path).encode() not in lake.store.get_bytes(f"{cnn}/cnn.pkl")
    model = register_model(
        lake, data, [fit_feature_candidates(lake, data, settings), cnn], settings
    )
    card = lake.card(model)
    assert {c.candidate for c in card.comparison} == {"lr", "cnn", "ensemble"}
    assert card.training == training
    predictor = lake.model(model)
    assert predictor.needs_volumes is (card.kind in ("cnn", "ensemble"))
    new = add_study(
        lake,
        "new",
        "pn",
        {f"signal_{j}": 1.0 for j in range(4)} | {f"noise_{j}": 0.0 for j in range(5)},
        None,
        volume=_volume(1, np.random.default_rng(5)),
    )
    result = lake.score(score_study(lake, new, model))
    assert 0.0 <= result.probability <= 1.0


def test_dataset_address_follows_its_content(lake: Lake, tmp_path: Path) -> None:
    keys = cohort(lake, n=20)
    first = build_dataset(lake, keys, PREP, EXTRACTION)
    assert build_dataset(lake, keys, PREP, EXTRACTION) == first
    lake.put_label("s001", 0)
    assert build_dataset(lake, keys, PREP, EXTRACTION) != first
