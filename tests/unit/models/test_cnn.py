"""The 3D CNN classifier: shapes, learning, exact reproducibility, early stopping, resume."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import log_loss, roc_auc_score
from support.volumes import FAST, volumes

from radflow.models.cnn import CHECKPOINT_NAME, CNNClassifier, ResNet3D


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return volumes(24, seed=0)


@pytest.fixture(scope="module")
def fitted(data: tuple[np.ndarray, np.ndarray]) -> CNNClassifier:
    return CNNClassifier(**FAST, epochs=3).fit(*data)


def test_module_shapes() -> None:
    net = ResNet3D(width=4)
    x = torch.rand(2, 1, 16, 24, 20)
    assert net(x).shape == (2,)
    assert net.embed(x).shape == (2, 16)


def test_classifier_shapes(fitted: CNNClassifier, data: tuple[np.ndarray, np.ndarray]) -> None:
    x = data[0][:5]
    proba = fitted.predict_proba(x)
    assert proba.shape == (5, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    features = fitted.transform(x)
    assert features.shape == (5, 16) and features.dtype == np.float32
    assert set(fitted.predict(x)) <= {0, 1}
    assert fitted.device_ == "cpu" and next(fitted.module_.parameters()).device.type == "cpu"
    assert [h["epoch"] for h in fitted.history_] == [1, 2, 3]
    assert fitted.best_epoch_ == 3 and fitted.resumed_from_epoch_ == 0
    # A batch of one (below batch_size) and a volume size other than the training one.
    assert fitted.predict_proba(volumes(1, seed=5, size=32)[0]).shape == (1, 2)


def test_learns_an_easy_task() -> None:
    x_test, y_test = volumes(40, seed=1, size=24)
    model = CNNClassifier(**FAST, epochs=10).fit(*volumes(40, seed=0, size=24))
    assert roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]) >= 0.9


def test_reproducible_by_seed_and_independent_of_workers(
    fitted: CNNClassifier, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x = data[0][:10]
    rng_before = torch.random.get_rng_state()
    again = CNNClassifier(**FAST, epochs=3).fit(*data)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG untouched
    assert np.array_equal(again.predict_proba(x), fitted.predict_proba(x))
    workers = CNNClassifier(**FAST, epochs=3, num_workers=2).fit(*data)
    assert np.array_equal(workers.predict_proba(x), fitted.predict_proba(x))
    other = CNNClassifier(**FAST, epochs=3, seed=1).fit(*data)
    assert not np.array_equal(other.predict_proba(x), fitted.predict_proba(x))


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    # Random labels: nothing generalises, so the validation loss soon stops improving.
    x, _ = volumes(24, seed=2)
    x_val, _ = volumes(16, seed=3)
    rng = np.random.default_rng(0)
    y, y_val = rng.permutation(np.arange(24) % 2), rng.permutation(np.arange(16) % 2)
    params: dict[str, Any] = {**FAST, "learning_rate": 1e-2, "epochs": 20, "patience": 2}
    model = CNNClassifier(**params, checkpoint_dir=str(tmp_path)).fit(x, y, x_val, y_val)

    losses = [h["val_loss"] for h in model.history_]
    assert len(losses) < 20
    assert model.best_epoch_ == int(np.argmin(losses)) + 1
    assert len(losses) == model.best_epoch_ + 2
    assert all(h["val_auc"] is not None for h in model.history_)
    assert log_loss(y_val, model.predict_proba(x_val)) == pytest.approx(min(losses), rel=1e-5)

    # The finished (early-stopped) training re-run resumes at its end: the same model.
    rerun = CNNClassifier(**params, checkpoint_dir=str(tmp_path)).fit(x, y, x_val, y_val)
    assert rerun.resumed_from_epoch_ == len(losses)
    assert rerun.history_ == model.history_ and rerun.best_epoch_ == model.best_epoch_
    assert np.array_equal(rerun.predict_proba(x_val), model.predict_proba(x_val))


def test_checkpoint_of_other_data_is_not_resumed(tmp_path: Path) -> None:
    params: dict[str, Any] = {**FAST, "epochs": 2, "checkpoint_dir": str(tmp_path)}
    x, y = volumes(16, seed=4)
    first = CNNClassifier(**params).fit(x, y)
    assert first.resumed_from_epoch_ == 0
    other = CNNClassifier(**params).fit(x[:12], y[:12])
    assert other.resumed_from_epoch_ == 0 and len(other.history_) == 2
    again = CNNClassifier(**params).fit(x[:12], y[:12])
    assert again.resumed_from_epoch_ == 2
    assert np.array_equal(again.predict_proba(x), other.predict_proba(x))
    changed = CNNClassifier(**{**params, "seed": 1}).fit(x[:12], y[:12])
    assert changed.resumed_from_epoch_ == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp files


def test_pickle_round_trip(fitted: CNNClassifier, data: tuple[np.ndarray, np.ndarray]) -> None:
    x = data[0][:6]
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(restored.predict_proba(x), fitted.predict_proba(x))
    assert np.array_equal(restored.transform(x), fitted.transform(x))
    assert restored.get_params() == fitted.get_params()


@pytest.mark.parametrize(
    ("x_shape", "y", "message"),
    [
        ((4, 20, 20), [0, 1, 0, 1], "must be 4-D"),
        ((4, 20, 20, 20), [1, 1, 1, 1], "both classes"),
        ((4, 20, 20, 20), [0, 1, 2, 1], "labels 0 and 1"),
        ((4, 20, 20, 20), [0, 1, 0], "4 volumes but y has 3"),
        ((4, 20, 15, 20), [0, 1, 0, 1], "at least 16 per axis"),
    ],
)
def test_bad_input_is_a_clear_error(x_shape: tuple[int, ...], y: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CNNClassifier(epochs=1).fit(np.zeros(x_shape, np.float32), np.array(y))


def test_bad_prediction_input(fitted: CNNClassifier) -> None:
    with pytest.raises(NotFittedError):
        CNNClassifier().predict_proba(np.zeros((1, 24, 24, 24), np.float32))
    with pytest.raises(ValueError, match="must be 4-D"):
        fitted.transform(np.zeros((24, 24, 24), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict_proba(np.full((1, 24, 24, 24), np.nan, np.float32))
