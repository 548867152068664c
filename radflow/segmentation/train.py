"""Training the segmentation model: seeded, checkpointed every epoch, resumable, data-parallel.

MONAI gives the network, the Dice+CE loss and the sliding-window inferer; what MONAI leaves
to its users is written here: every random draw is seeded from (seed, epoch, sample)
(`patches`), so one process, N processes and a training resumed after a kill all see the same
patches; an atomic `segmentation-last.pt` ends every epoch; with `processes` > 1 the same
loop runs in N processes (`distributed`), each on its contiguous share of every global batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.losses.dice import DiceCELoss
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from radflow.models.checkpoint import save_checkpoint
from radflow.scratch import scratch_dir
from radflow.segmentation.distributed import (
    all_mean,
    broadcast_flag,
    check_processes,
    launch,
    rank_device,
)
from radflow.segmentation.model import SegmentationModel
from radflow.segmentation.network import build_network
from radflow.segmentation.params import SegmentationParams, data_parallel_processes
from radflow.segmentation.patches import Case, PatchSampler
from radflow.segmentation.sliding import probabilities

log = logging.getLogger("radflow.segmentation")

CHECKPOINT_NAME = "segmentation-last.pt"
# Part of the fingerprint: bump it when the checkpoint layout or the training loop changes.
_CHECKPOINT_VERSION = 1

History = list[tuple[int, float, float | None]]
EpochHook = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainedSegmentation:
    """`model` holds the weights of the best validation epoch (the last epoch without
    validation cases). `epochs_run` counts every epoch of the training, those before a resume
    included; `resumed_from_epoch` is the checkpoint's epoch it continued from (None: from
    scratch). `history` is (epoch, mean training loss, validation Dice or None) per epoch."""

    model: SegmentationModel
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int | None
    device: str
    history: History


def train_segmentation(
    train: Sequence[Case],
    validation: Sequence[Case],
    params: SegmentationParams,
    *,
    spacing_mm: tuple[float, float, float],
    seed: int,
    checkpoint_dir: Path | None = None,
    processes: int | None = None,
    _after_epoch: EpochHook | None = None,
) -> TrainedSegmentation:
    """Train on patches of `train`, stop early on the mean validation Dice of `validation`.

    Each epoch is `ceil(samples_per_epoch / batch_size)` global batches of `batch_size`
    samples (sample ids `step * batch_size + j`); with `processes` N > 1 (None: the params'),
    process r trains on the r-th contiguous 1/N of each batch and DDP averages the gradients,
    so the weights match one process up to float rounding. With `checkpoint_dir`, a matching
    `segmentation-last.pt` (same data, seed, spacing and params but `processes`/`device`) is
    resumed, and a finished one returns at once.

    `_after_epoch(rank, epoch)` is for tests only: called in every process after the epoch's
    checkpoint is written (a test kills or fails a training there).
    """
    if not train:
        raise ValueError("no training cases: the segmentation model needs annotated volumes")
    for case in (*train, *validation):
        if not isinstance(case, Case):
            raise TypeError(f"cases must be radflow.segmentation.patches.Case, got {type(case)}")
    device = _resolve_device(params.device)
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    world = data_parallel_processes(params, gpus) if processes is None else processes
    check_processes(world, params.batch_size, device)

    fingerprint = _fingerprint(train, validation, params, spacing_mm, seed)
    path = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start = _load_checkpoint(path, fingerprint)
    resumed_from = None if start is None else int(start["progress"]["epoch"])
    job = _Job(
        params=params,
        seed=seed,
        device=device,
        fingerprint=fingerprint,
        checkpoint=path,
        after_epoch=_after_epoch,
    )
    if start is not None and _Progress(**start["progress"]).finished(params):
        log.info("segmentation training already finished at epoch %d", resumed_from)
        outcome = _Outcome(_Progress(**start["progress"]), start["module"])
    elif world == 1:
        outcome = _run(job, train, validation, 0, 1, start)
    else:
        outcome = _run_in_processes(job, train, validation, world, resume=start is not None)

    progress = outcome.progress
    state = progress.best_state if progress.best_state is not None else outcome.final_state
    return TrainedSegmentation(
        model=SegmentationModel(params=params, spacing_mm=spacing_mm, state=dict(state)),
        best_epoch=progress.best_epoch,
        epochs_run=progress.epoch,
        resumed_from_epoch=resumed_from,
        device=device,
        history=[(int(e), float(loss), dice) for e, loss, dice in progress.history],
    )


# ------------------------------------------------------------------------------ the loop


@dataclass(frozen=True)
class _Job:
    """What every process of a training needs besides the cases (picklable for spawn)."""

    params: SegmentationParams
    seed: int
    device: str
    fingerprint: str
    checkpoint: Path | None
    after_epoch: EpochHook | None = None
    threads: int | None = None  # torch threads per process, set in spawned processes only
    data: Path | None = None  # where spawned processes read the cases
    result: Path | None = None  # where rank 0 of spawned processes writes the outcome


@dataclass
class _Progress:
    """Everything of a training besides the weights and the optimizer that a resume needs
    (plain types and tensors, so a checkpoint loads with weights_only=True)."""

    epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_dice: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[list[Any]] = field(default_factory=list)

    def finished(self, params: SegmentationParams) -> bool:
        return self.epoch >= params.epochs or self.bad_epochs >= params.patience


@dataclass
class _Outcome:
    progress: _Progress
    final_state: dict[str, torch.Tensor]


def _run(
    job: _Job,
    train: Sequence[Case],
    validation: Sequence[Case],
    rank: int,
    world: int,
    start: dict[str, Any] | None,
) -> _Outcome:
    """The training loop of process `rank` of `world` (world 1: no process group)."""
    params = job.params
    device = rank_device(job.device, rank)
    amp = job.device == "cuda"
    # A local seed for the initial weights, without touching the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        net = build_network(params)
    net.to(device)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    scaler = torch.amp.GradScaler(job.device, enabled=amp)
    progress = _Progress()
    if start is not None:
        net.load_state_dict(start["module"])
        optimizer.load_state_dict(start["optimizer"])
        scaler.load_state_dict(start["scaler"])
        progress = _Progress(**start["progress"])
        if rank == 0:
            log.info("resuming segmentation training after epoch %d", progress.epoch)
    model: nn.Module = net
    if world > 1:
        model = DistributedDataParallel(net, device_ids=[rank] if amp else None)

    sampler = PatchSampler(train, params, job.seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    steps = math.ceil(params.samples_per_epoch / params.batch_size)
    share = params.batch_size // world
    stop = progress.finished(params)
    while not stop:
        epoch = progress.epoch + 1
        model.train()
        total = 0.0
        for step in range(steps):
            first = step * params.batch_size + rank * share
            images, masks = sampler.batch(epoch, range(first, first + share))
            x = torch.from_numpy(images).to(device, non_blocking=True)
            y = torch.from_numpy(masks).to(device, dtype=torch.float32, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.item())
        train_loss = total / steps if world == 1 else all_mean(total / steps, device)

        progress.epoch = epoch
        if rank == 0:
            dice = _validation_dice(net, validation, params, device, amp) if validation else None
            _record(progress, net, epoch, train_loss, dice)
            log.info(
                "segmentation epoch %d/%d: train loss %.4f, validation Dice %s",
                epoch,
                params.epochs,
                train_loss,
                "-" if dice is None else f"{dice:.4f}",
            )
            if job.checkpoint is not None:
                save_checkpoint(job.checkpoint, job.fingerprint, net, optimizer, scaler, progress)
        stop = progress.finished(params)
        if world > 1:
            stop = broadcast_flag(stop, device)
        if job.after_epoch is not None:
            job.after_epoch(rank, epoch)
    if rank == 0 and progress.bad_epochs >= params.patience:
        log.info("early stop after epoch %d; best epoch %d", progress.epoch, progress.best_epoch)
    return _Outcome(progress, _cpu_copy(net))


def _record(
    progress: _Progress, net: nn.Module, epoch: int, train_loss: float, dice: float | None
) -> None:
    progress.history.append([epoch, train_loss, dice])
    if dice is None:
        progress.best_epoch = epoch
    elif dice > progress.best_dice:
        progress.best_dice, progress.best_epoch = dice, epoch
        progress.best_state = _cpu_copy(net)
        progress.bad_epochs = 0
    else:
        progress.bad_epochs += 1


def _validation_dice(
    net: nn.Module,
    cases: Sequence[Case],
    params: SegmentationParams,
    device: torch.device,
    amp: bool,
) -> float:
    """Mean Dice over `cases` of the thresholded whole-volume prediction."""
    scores = []
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        for case in cases:
            predicted = probabilities(net, case.image, params, device) > params.threshold
            scores.append(dice_score(predicted, case.mask.astype(bool)))
    return float(np.mean(scores))


def dice_score(predicted: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> float:
    """2|A∩B| / (|A| + |B|); two empty masks agree perfectly (1.0)."""
    total = int(predicted.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(predicted, truth).sum()) / total


def _cpu_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


# ------------------------------------------------------------------------- processes


def _run_in_processes(
    job: _Job,
    train: Sequence[Case],
    validation: Sequence[Case],
    world: int,
    *,
    resume: bool,
) -> _Outcome:
    """Spawn `world` processes; the cases travel as .npy files each process memory-maps
    (pickling them through spawn's pipe would copy every volume once per process;
    copy-on-write maps, since torch warns about tensors made from read-only arrays)."""
    with scratch_dir("segtrain") as folder:
        for split, cases in (("train", train), ("validation", validation)):
            for i, case in enumerate(cases):
                np.save(folder / f"{split}-{i}-image.npy", case.image)
                np.save(folder / f"{split}-{i}-mask.npy", case.mask)
        keys = {"train": [c.key for c in train], "validation": [c.key for c in validation]}
        (folder / "keys.json").write_text(json.dumps(keys))
        threads = max(1, torch.get_num_threads() // world) if job.device == "cpu" else None
        spawned = replace(job, threads=threads, data=folder, result=folder / "result.pt")
        launch(_rank_main, world, (spawned, resume), job.device)
        saved = torch.load(folder / "result.pt", map_location="cpu", weights_only=True)
    return _Outcome(_Progress(**saved["progress"]), saved["final_state"])


def _rank_main(rank: int, world: int, arg: tuple[_Job, bool]) -> None:
    """One spawned process: read the cases (and the checkpoint to resume), train, and on
    rank 0 write the outcome where the caller reads it."""
    job, resume = arg
    assert job.data is not None and job.result is not None
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    keys = json.loads((job.data / "keys.json").read_text())
    cases = {
        split: [
            Case(
                key,
                np.load(job.data / f"{split}-{i}-image.npy", mmap_mode="c"),
                np.load(job.data / f"{split}-{i}-mask.npy", mmap_mode="c"),
            )
            for i, key in enumerate(keys[split])
        ]
        for split in ("train", "validation")
    }
    start = None
    if resume:
        assert job.checkpoint is not None
        start = torch.load(job.checkpoint, map_location="cpu", weights_only=True)
    outcome = _run(job, cases["train"], cases["validation"], rank, world, start)
    if rank == 0:
        torch.save(
            {"progress": vars(outcome.progress), "final_state": outcome.final_state}, job.result
        )


# ------------------------------------------------------------------------ checkpoints


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return device


def _fingerprint(
    train: Sequence[Case],
    validation: Sequence[Case],
    params: SegmentationParams,
    spacing_mm: tuple[float, float, float],
    seed: int,
) -> str:
    """sha256 of what decides the trained weights: settings (not how many processes or which
    device run them), grid spacing, seed, and every case's key and voxels."""
    settings = params.model_dump(mode="json", exclude={"processes", "device"})
    digest = hashlib.sha256(
        json.dumps(
            [_CHECKPOINT_VERSION, settings, [float(s) for s in spacing_mm], seed], sort_keys=True
        ).encode()
    )
    for split, cases in (("train", train), ("validation", validation)):
        digest.update(f"{split}:{len(cases)}".encode())
        for case in cases:
            digest.update(json.dumps([case.key, list(case.image.shape)]).encode())
            digest.update(np.ascontiguousarray(case.image).data)
            digest.update(np.ascontiguousarray(case.mask).data)
    return digest.hexdigest()


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        # Unreadable (another torch's format, a damaged disk): training from scratch replaces
        # it, where raising would block every later training in this folder.
        log.warning("not resuming %s: unreadable (%s)", path.name, type(e).__name__)
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        log.info("not resuming %s: it is from other data or settings", path.name)
        return None
    return saved
