"""Training the segmentation model in one process: it learns, it is exactly reproducible on the
CPU, it stops early on the validation Dice, and a killed training resumes to the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from support.seg_spheres import SPACING, TINY, one_torch_thread, sphere_case, training_spheres

from radflow.segmentation.model import SegmentationModel
from radflow.segmentation.patches import Case
from radflow.segmentation.sliding import probabilities
from radflow.segmentation.train import (
    CHECKPOINT_NAME,
    TrainedSegmentation,
    dice_score,
    train_segmentation,
)

TESTS = Path(__file__).resolve().parents[2]
ROOT = TESTS.parent
TRAIN, VALIDATION = training_spheres()
PARAMS = TINY.model_copy(update={"epochs": 4})


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def straight() -> TrainedSegmentation:
    with one_torch_thread():
        return train_segmentation(TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=0)


def same_weights(a: SegmentationModel, b: SegmentationModel) -> bool:
    return a.state.keys() == b.state.keys() and all(
        torch.equal(a.state[k], b.state[k]) for k in a.state
    )


def validation_dice(model: SegmentationModel, cases: list[Case]) -> float:
    net = model.network()
    scores = [
        dice_score(probabilities(net, c.image, model.params) > model.params.threshold, c.mask > 0)
        for c in cases
    ]
    return float(np.mean(scores))


def test_it_learns_bright_spheres() -> None:
    params = TINY.model_copy(update={"epochs": 12, "samples_per_epoch": 16, "patience": 4})
    train = [sphere_case(seed) for seed in range(4)]
    result = train_segmentation(train, VALIDATION, params, spacing_mm=SPACING, seed=0)
    dice = [d for _, _, d in result.history]
    assert max(d for d in dice if d is not None) >= 0.8
    assert result.history[0][1] > result.history[result.best_epoch - 1][1]  # the loss fell
    # The returned weights are the best epoch's, and survive the lake's round trip.
    restored = SegmentationModel.from_bytes(result.model.to_bytes())
    assert validation_dice(restored, VALIDATION) == pytest.approx(dice[result.best_epoch - 1])
    assert restored.spacing_mm == SPACING and result.device == "cpu"


def test_two_runs_give_bitwise_equal_weights(straight: TrainedSegmentation) -> None:
    rng_before = torch.random.get_rng_state()
    again = train_segmentation(TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG untouched
    assert same_weights(again.model, straight.model)
    assert again.history == straight.history and again.resumed_from_epoch is None
    other = train_segmentation(TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=1)
    assert not same_weights(other.model, straight.model)


def test_early_stopping_keeps_the_best_epoch() -> None:
    params = TINY.model_copy(update={"epochs": 12, "patience": 1, "learning_rate": 3e-2})
    result = train_segmentation(TRAIN, VALIDATION, params, spacing_mm=SPACING, seed=0)
    assert all(d is not None for _, _, d in result.history)
    dice = [float(d or 0) for _, _, d in result.history]
    assert len(dice) < 12 and result.epochs_run == len(dice)
    assert result.best_epoch == int(np.argmax(dice)) + 1 == len(dice) - 1
    assert validation_dice(result.model, VALIDATION) == pytest.approx(dice[-2])
    assert validation_dice(result.model, VALIDATION) != pytest.approx(dice[-1])


def test_without_validation_every_epoch_runs_and_the_last_is_kept(tmp_path: Path) -> None:
    result = train_segmentation(
        TRAIN, [], PARAMS, spacing_mm=SPACING, seed=0, checkpoint_dir=tmp_path
    )
    assert [(e, d) for e, _, d in result.history] == [(1, None), (2, None), (3, None), (4, None)]
    assert result.best_epoch == result.epochs_run == 4
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert all(torch.equal(saved["module"][k], v) for k, v in result.model.state.items())


def test_a_killed_training_resumes_to_the_same_weights(
    straight: TrainedSegmentation, tmp_path: Path
) -> None:
    # A real kill: SIGKILL in a subprocess right after epoch 2's checkpoint (no cleanup runs).
    script = textwrap.dedent(
        f"""
        import os, signal, sys, torch
        from pathlib import Path
        from support.seg_spheres import SPACING, TINY, training_spheres
        from radflow.segmentation.train import train_segmentation

        def die(rank, epoch):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        torch.set_num_threads(1)
        train_segmentation(
            *training_spheres(),
            TINY.model_copy(update={{"epochs": 4}}), spacing_mm=SPACING, seed=0,
            checkpoint_dir=Path({str(tmp_path)!r}), _after_epoch=die,
        )
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    # The checkpoint loads without running pickle code, and holds epoch 2.
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["progress"]["epoch"] == 2

    resumed = train_segmentation(
        TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=0, checkpoint_dir=tmp_path
    )
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 4
    assert same_weights(resumed.model, straight.model)
    assert resumed.history == straight.history and resumed.best_epoch == straight.best_epoch

    # Finished: a re-run returns at once, the same model; no temporary files are left.
    again = train_segmentation(
        TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=0, checkpoint_dir=tmp_path
    )
    assert again.resumed_from_epoch == 4 and same_weights(again.model, straight.model)
    assert again.history == straight.history
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_a_checkpoint_of_other_data_or_settings_is_not_resumed(tmp_path: Path) -> None:
    params = PARAMS.model_copy(update={"epochs": 1})
    first = train_segmentation(
        TRAIN, [], params, spacing_mm=SPACING, seed=0, checkpoint_dir=tmp_path
    )
    assert first.resumed_from_epoch is None
    for changed in (
        {"train": TRAIN[:2]},
        {"seed": 1},
        {"spacing_mm": (2.0, 2.0, 2.0)},
        {"params": params.model_copy(update={"learning_rate": 1e-3})},
    ):
        kwargs = {"train": TRAIN, "params": params, "spacing_mm": SPACING, "seed": 0, **changed}
        result = train_segmentation(validation=[], checkpoint_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
        assert result.resumed_from_epoch is None, changed
    # Neither the number of processes nor the device is part of the fingerprint.
    kwargs = {"train": TRAIN, "params": params, "spacing_mm": SPACING, "seed": 0}
    train_segmentation(validation=[], checkpoint_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    same = params.model_copy(update={"processes": 2, "device": "auto"})
    result = train_segmentation(
        TRAIN, [], same, spacing_mm=SPACING, seed=0, checkpoint_dir=tmp_path
    )
    assert result.resumed_from_epoch == 1


def test_an_unreadable_checkpoint_is_replaced(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    params = PARAMS.model_copy(update={"epochs": 1})
    result = train_segmentation(
        TRAIN, [], params, spacing_mm=SPACING, seed=0, checkpoint_dir=tmp_path
    )
    assert result.resumed_from_epoch is None
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["progress"]["epoch"] == 1


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="batch_size 4 must be divisible by processes 3"):
        train_segmentation(TRAIN, [], PARAMS, spacing_mm=SPACING, seed=0, processes=3)
    with pytest.raises(ValueError, match="no training cases"):
        train_segmentation([], VALIDATION, PARAMS, spacing_mm=SPACING, seed=0)
    with pytest.raises(TypeError, match=r"must be radflow\.segmentation\.patches\.Case"):
        train_segmentation([TRAIN[0].image], [], PARAMS, spacing_mm=SPACING, seed=0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="image shape"):
        Case("k", np.zeros((24, 24, 24), np.float32), np.zeros((24, 24, 20), np.uint8))


def test_dice_score() -> None:
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    assert dice_score(a, b) == 1.0  # two empty masks agree
    a[0, 0, :2] = True
    assert dice_score(a, b) == 0.0
    b[0, 0, 1:3] = True
    assert dice_score(a, b) == pytest.approx(0.5)
