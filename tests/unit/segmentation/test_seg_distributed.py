"""Data-parallel training on the CPU: 2 gloo processes train to the weights 1 process reaches
on the same global batches, and a failure in one process comes back as a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support.seg_spheres import (
    SPACING,
    TINY,
    fail_in_process_1,
    mark_the_exit,
    one_torch_thread,
    training_spheres,
)

from radflow.segmentation.distributed import DistributedTrainingError, launch
from radflow.segmentation.train import CHECKPOINT_NAME, TrainedSegmentation, train_segmentation

TRAIN, VALIDATION = training_spheres()
PARAMS = TINY.model_copy(update={"epochs": 2})
# Two processes sum their shares' gradients in another order than one process sums the whole
# batch; after 4 AdamW steps the weights differ by float32 rounding only (seen: < 3e-7).
ATOL, RTOL = 1e-5, 1e-4


def cancelled_by_instance_norm(state: dict[str, torch.Tensor]) -> set[str]:
    """The biases of MONAI's convolutions followed by their ADN block (instance norm, then
    PReLU): the norm subtracts them again, so their true gradient is zero and what they get
    is float rounding, which Adam scales up to steps of the learning rate's size. They do not
    change the network's output; the test compares the output instead."""
    return {
        name
        for name in state
        if name.endswith(".conv.bias") and name.removesuffix("conv.bias") + "adn.A.weight" in state
    }


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def one() -> TrainedSegmentation:
    with one_torch_thread():
        return train_segmentation(
            TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=0, processes=1
        )


def assert_same_training(two: TrainedSegmentation, one: TrainedSegmentation) -> None:
    assert one.model.state.keys() == two.model.state.keys()
    cancelled = cancelled_by_instance_norm(one.model.state)
    assert len(cancelled) == 6  # one per ADN block of this 3-level U-Net
    for name, weights in one.model.state.items():
        if name not in cancelled:
            assert torch.allclose(two.model.state[name], weights, atol=ATOL, rtol=RTOL), name
    x = torch.from_numpy(VALIDATION[0].image)[None, None]
    with torch.inference_mode():
        logits_one, logits_two = one.model.network()(x), two.model.network()(x)
    assert torch.allclose(logits_two, logits_one, atol=1e-4, rtol=1e-4)
    assert [e for e, _, _ in two.history] == [1, 2] and two.epochs_run == 2
    for (_, loss1, dice1), (_, loss2, dice2) in zip(one.history, two.history, strict=True):
        assert loss2 == pytest.approx(loss1, rel=1e-4)
        assert dice1 is not None and dice2 == pytest.approx(dice1, abs=1e-3)


def test_two_gloo_processes_match_one(one: TrainedSegmentation, tmp_path: Path) -> None:
    two = train_segmentation(
        TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=0, processes=2, checkpoint_dir=tmp_path
    )
    assert two.resumed_from_epoch is None and two.device == "cpu"
    assert_same_training(two, one)
    # The weights moved from their start: the comparison is not between two initialisations.
    initial = train_segmentation(
        TRAIN,
        [],
        PARAMS.model_copy(update={"samples_per_epoch": 1, "epochs": 1}),
        spacing_mm=SPACING,
        seed=0,
    )
    moved = max(
        float((one.model.state[k] - initial.model.state[k]).abs().max()) for k in one.model.state
    )
    assert moved > 100 * ATOL
    # Rank 0 wrote the checkpoint; the finished training returns without starting processes.
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]
    again = train_segmentation(
        TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=0, processes=2, checkpoint_dir=tmp_path
    )
    assert again.resumed_from_epoch == 2
    assert all(torch.equal(again.model.state[k], v) for k, v in two.model.state.items())


def test_a_failed_process_is_a_clear_error_and_the_training_resumes(
    one: TrainedSegmentation, tmp_path: Path
) -> None:
    # The failing process also reports that it imported neither pytest (the caller's main
    # module) nor Prefect or the CLI: spawned processes start lean.
    message = r"failed in process 1 of 2: RuntimeError: test failure in rank 1 .* loaded \[\]$"
    with pytest.raises(DistributedTrainingError, match=message):
        train_segmentation(
            TRAIN,
            VALIDATION,
            PARAMS,
            spacing_mm=SPACING,
            seed=0,
            processes=2,
            checkpoint_dir=tmp_path,
            _after_epoch=fail_in_process_1,
        )
    # Rank 0 had written epoch 1's checkpoint, trained by the two processes; one process
    # (the fingerprint leaves the number out) resumes it to the one-process weights. (Two
    # new processes would resume it alike, at the cost of two more MONAI imports.)
    resumed = train_segmentation(
        TRAIN, VALIDATION, PARAMS, spacing_mm=SPACING, seed=0, processes=1, checkpoint_dir=tmp_path
    )
    assert resumed.resumed_from_epoch == 1
    assert_same_training(resumed, one)


def test_the_first_process_to_fail_is_the_one_named(tmp_path: Path) -> None:
    """A failing process records itself before its process group closes; its peers then
    fail on the closed connection, and torch names whichever process it finds ended first
    (now and then the peer, when both have ended before it looks)."""
    from radflow.segmentation.distributed import _read_first_failure, _record_first_failure

    record = str(tmp_path / "first-failure")
    assert _read_first_failure(record) is None  # a signal, not an exception: torch's account
    _record_first_failure(record, 1, RuntimeError("test failure in rank 1"))
    _record_first_failure(record, 0, RuntimeError("Connection closed by peer"))
    assert _read_first_failure(record) == (1, "RuntimeError: test failure in rank 1")


def test_the_recorded_failure_is_named_even_when_a_peer_died_of_a_signal() -> None:
    """gloo may abort the peer whose collective lost its connection (SIGABRT, no error
    file): torch may then report that peer, but the recorded failure is the cause."""
    from torch.multiprocessing.spawn import ProcessExitedException

    from radflow.segmentation.distributed import _failure_message

    peer = ProcessExitedException(
        "process 0 terminated with signal SIGABRT",
        error_index=0,
        error_pid=4242,
        exit_code=-6,
        signal_name="SIGABRT",
    )
    cause = (1, "RuntimeError: test failure in rank 1")
    assert _failure_message(peer, 2, cause) == (
        "data-parallel training failed in process 1 of 2: RuntimeError: test failure in rank 1"
    )
    assert _failure_message(peer, 2, None) == (
        "data-parallel training process 0 of 2 died (signal SIGABRT)"
    )


def test_a_finished_process_ends_without_the_interpreters_finalisation(tmp_path: Path) -> None:
    # Finalising a process that ran DistributedDataParallel on gloo now and then aborted it
    # (SIGABRT) after a successful training; CI failed on it once.
    launch(mark_the_exit, 2, tmp_path, "cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ran-0", "ran-1"]
