"""A small 3D ResNet on preprocessed CT volumes: a binary classifier and a deep-feature extractor.

`CNNClassifier` wraps `ResNet3D` in the scikit-learn estimator contract so it fits where the
radiomics models do (`fit`, `predict_proba`, `transform`, `clone`, pickle). Training is exactly
reproducible on CPU and resumable: every random draw is seeded from (seed, epoch[, sample]),
never from a global random state, so a training restarted from its last epoch checkpoint ends
with the same weights as one that ran through.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_array, check_is_fitted
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from radflow.models.checkpoint import save_checkpoint

log = logging.getLogger("radflow.cnn")

MIN_SIZE = 16
CHECKPOINT_NAME = "last.pt"
# Part of the fingerprint: bump it when the checkpoint layout or the training loop changes.
_CHECKPOINT_VERSION = 1

Volumes = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: 3-D batches are small (the last one can hold one volume) and a
    # volume's output then never depends on its batch-mates, so training and eval agree.
    return nn.GroupNorm(math.gcd(4, channels), channels)


class _BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with an identity (or 1x1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = _norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride, bias=False), _norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet3D(nn.Module):
    """Stem, three residual stages (width, 2·width, 4·width channels), global pool, one logit.

    The stem has stride 2: a 40³ volume at full resolution would cost most of the compute in the
    first layers on a CPU, and the lesions of interest span several voxels.
    """

    def __init__(self, in_channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, 2, 1, bias=False), _norm(width), nn.ReLU()
        )
        self.stages = nn.Sequential(
            _BasicBlock(width, width, 1),
            _BasicBlock(width, 2 * width, 2),
            _BasicBlock(2 * width, 4 * width, 2),
        )
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head = nn.Linear(4 * width, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) volumes to (N, 4·width) pooled features."""
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) volumes to (N,) logits."""
        out: torch.Tensor = self.head(self.embed(x))
        return out.squeeze(1)


class _TrainingSet(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Volumes and labels, randomly flipped per sample when `augment`.

    Items are addressed by (epoch, index), which `_EpochOrder` hands out: the flips come from
    a generator seeded with (seed, epoch, index), not from a worker's random state, so they
    depend neither on `num_workers` nor on where a training resumed, and persistent workers
    need no message about the epoch.
    """

    def __init__(self, x: Volumes, y: Labels, augment: bool, seed: int) -> None:
        self.x, self.y, self.augment, self.seed = x, y, augment, seed

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = item
        volume = self.x[index]
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, index])
            axes = tuple(int(a) for a in np.flatnonzero(rng.random(3) < 0.5))
            volume = np.ascontiguousarray(np.flip(volume, axes))
        label = torch.tensor(self.y[index], dtype=torch.float32)
        return torch.from_numpy(volume).unsqueeze(0), label


class _EpochOrder(Sampler[tuple[int, int]]):
    """A shuffled order per epoch, from a generator seeded with (seed, epoch)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 1

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(
            self.n, generator=torch.Generator().manual_seed(_seed(self.seed, self.epoch))
        )
        return iter([(self.epoch, int(i)) for i in order])


@dataclass
class _Progress:
    """Everything of a training besides the weights and the optimizer that a resume needs."""

    epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class CNNClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """`ResNet3D` trained as a scikit-learn classifier on (N, D, H, W) float32 volumes.

    AdamW on BCEWithLogitsLoss; early stopping on the validation loss when `fit` gets
    validation data; mixed precision on CUDA. With `checkpoint_dir`, every epoch ends with an
    atomic `last.pt`, and `fit` continues from it when its fingerprint (training parameters,
    device and data) matches; a finished training's checkpoint stays, so re-running it returns
    the same model at once.
    """

    def __init__(
        self,
        *,
        width: int = 8,
        epochs: int = 30,
        batch_size: int = 8,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        patience: int = 5,
        augment: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        device: str = "auto",
        checkpoint_dir: str | None = None,
    ) -> None:
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patience = patience
        self.augment = augment
        self.num_workers = num_workers
        self.seed = seed
        self.device = device
        self.checkpoint_dir = checkpoint_dir

    # ----------------------------------------------------------------------------- training

    def fit(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        X_val: npt.ArrayLike | None = None,
        y_val: npt.ArrayLike | None = None,
    ) -> CNNClassifier:
        """Train from scratch, or resume from a matching `checkpoint_dir/last.pt`."""
        self._check_params()
        x, labels = _check_volumes(X, "X"), _check_labels(y, "y")
        if len(x) != len(labels):
            raise ValueError(f"X has {len(x)} volumes but y has {len(labels)} labels")
        if len(np.unique(labels)) < 2:
            raise ValueError(f"y must contain both classes 0 and 1, got only {labels[0]}")
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        val: tuple[Volumes, Labels] | None = None
        if X_val is not None and y_val is not None:
            val = _check_volumes(X_val, "X_val"), _check_labels(y_val, "y_val")
            if len(val[0]) != len(val[1]):
                raise ValueError(f"X_val has {len(val[0])} volumes but y_val {len(val[1])} labels")
        device = self._resolve_device()
        amp = device == "cuda"

        # A local seed for the initial weights, without touching the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = ResNet3D(width=self.width)
        module.to(device)
        optimizer = torch.optim.AdamW(
            module.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        scaler = torch.amp.GradScaler(device, enabled=amp)

        fingerprint = self._fingerprint(device, x, labels, val)
        path = Path(self.checkpoint_dir) / CHECKPOINT_NAME if self.checkpoint_dir else None
        progress = _Progress()
        if path is not None and path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("fingerprint") == fingerprint:
                module.load_state_dict(saved["module"])
                optimizer.load_state_dict(saved["optimizer"])
                scaler.load_state_dict(saved["scaler"])
                progress = _Progress(**saved["progress"])
                log.info("resuming %s after epoch %d", path, progress.epoch)
            else:
                log.info("ignoring %s: it is from other data or parameters", path)
        resumed_from = progress.epoch

        order = _EpochOrder(len(x), self.seed)
        # Workers persist across epochs and are forked from a fresh forkserver process: a
        # worker forked straight from a process that has run a Prefect flow exits at once
        # with code 1 (seen with Prefect 3.8.8 and torch 2.13).
        loader = DataLoader(
            _TrainingSet(x, labels, self.augment, self.seed),
            batch_size=self.batch_size,
            sampler=order,
            # Its own generator: the loader draws a worker base seed each epoch, and the
            # caller's global random state must stay untouched.
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            multiprocessing_context="forkserver" if self.num_workers > 0 else None,
            pin_memory=amp,
        )
        # Without validation data bad_epochs stays 0 and every epoch runs.
        while progress.epoch < self.epochs and progress.bad_epochs < self.patience:
            epoch = progress.epoch + 1
            order.epoch = epoch
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": _train_epoch(module, loader, optimizer, scaler, device),
                "val_loss": None,
                "val_auc": None,
            }
            if val is None:
                progress.best_epoch = epoch
            else:
                logits = _logits(module, val[0], device, self.batch_size, embed=False)
                record["val_loss"] = float(
                    F.binary_cross_entropy_with_logits(logits, torch.from_numpy(val[1]).float())
                )
                if len(np.unique(val[1])) == 2:
                    record["val_auc"] = float(roc_auc_score(val[1], logits.numpy()))
                if record["val_loss"] < progress.best_loss:
                    progress.best_loss, progress.best_epoch = record["val_loss"], epoch
                    progress.best_state = {
                        k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()
                    }
                    progress.bad_epochs = 0
                else:
                    progress.bad_epochs += 1
            progress.epoch = epoch
            progress.history.append(record)
            log.info(
                "epoch %d/%d: train loss %.4f, val loss %s",
                epoch,
                self.epochs,
                record["train_loss"],
                "-" if record["val_loss"] is None else f"{record['val_loss']:.4f}",
            )
            if path is not None:
                save_checkpoint(path, fingerprint, module, optimizer, scaler, progress)
        if progress.bad_epochs >= self.patience:
            log.info(
                "early stop after epoch %d; best epoch %d", progress.epoch, progress.best_epoch
            )

        if progress.best_state is not None:
            module.load_state_dict(progress.best_state)
        self.module_ = module.cpu().eval()
        self.classes_ = np.array([0, 1])
        self.history_ = progress.history
        self.best_epoch_ = progress.best_epoch
        self.device_ = device
        self.resumed_from_epoch_ = resumed_from
        return self

    # ----------------------------------------------------------------------------- inference

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, 2) probabilities of classes 0 and 1."""
        check_is_fitted(self, "module_")
        logits = self._infer(X, embed=False)
        p1 = torch.sigmoid(logits.double()).numpy()
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Class labels at probability 0.5 (the threshold the loss is calibrated for)."""
        proba = self.predict_proba(X)
        labels: npt.NDArray[np.int64] = self.classes_[proba.argmax(axis=1)]
        return labels

    def transform(self, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """(N, 4·width) deep features: the pooled embedding that feeds the logit."""
        check_is_fitted(self, "module_")
        features: npt.NDArray[np.float32] = self._infer(X, embed=True).float().numpy()
        return features

    def _infer(self, X: npt.ArrayLike, *, embed: bool) -> torch.Tensor:
        x = _check_volumes(X, "X")
        # The device is resolved again, not taken from device_: a model trained on a GPU may
        # be unpickled where there is none.
        device = self._resolve_device()
        module = self.module_ if device == "cpu" else copy.deepcopy(self.module_).to(device)
        return _logits(module, x, device, self.batch_size, embed=embed)

    # ----------------------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        """The module as numpy arrays: pickling tensors goes through torch.save, whose archive
        carries a fresh serialization id each time, so two identical models would pickle to
        different bytes and the lake would not be byte-reproducible."""
        state: dict[str, Any] = dict(super().__getstate__())
        module = state.pop("module_", None)
        if module is not None:
            state["module_state_"] = {k: v.numpy() for k, v in module.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.pop("module_state_", None)
        super().__setstate__(state)
        if weights is not None:
            module = ResNet3D(width=self.width)
            module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
            self.module_ = module.eval()

    # ----------------------------------------------------------------------------- helpers

    def _check_params(self) -> None:
        for name in ("width", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.seed < 0:
            raise ValueError("num_workers and seed must not be negative")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be positive and weight_decay not negative")

    def _resolve_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device")
        return str(self.device)

    def _fingerprint(
        self, device: str, x: Volumes, y: Labels, val: tuple[Volumes, Labels] | None
    ) -> str:
        """sha256 of what decides the trained weights: parameters, device and data.

        `num_workers` and `checkpoint_dir` are left out (they do not change the result), and
        the resolved device stands for `device` ("auto" and "cpu" train alike on a CPU).
        """
        params = self.get_params()
        del params["num_workers"], params["checkpoint_dir"], params["device"]
        digest = hashlib.sha256(
            json.dumps([_CHECKPOINT_VERSION, device, params], sort_keys=True).encode()
        )
        for array in (x, y, *(val or (None, None))):
            if array is None:
                digest.update(b"none")
            else:
                digest.update(f"{array.dtype.str}{array.shape}".encode())
                digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()


def _check_volumes(X: npt.ArrayLike, name: str) -> Volumes:
    x = np.asarray(X)
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, D, H, W), got shape {x.shape}")
    if min(x.shape[1:]) < MIN_SIZE:
        raise ValueError(f"{name} volumes must be at least {MIN_SIZE} per axis, got {x.shape[1:]}")
    # check_array also rejects NaN and inf, which would silently poison the training.
    checked: Volumes = check_array(
        x, dtype=np.float32, order="C", allow_nd=True, input_name=name, estimator="CNNClassifier"
    )
    return checked


def _check_labels(y: npt.ArrayLike, name: str) -> Labels:
    labels = np.asarray(y).ravel()
    if len(labels) == 0 or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{name} must be labels 0 and 1, got values {np.unique(labels)[:5]}")
    return np.ascontiguousarray(labels, dtype=np.int64)


def _seed(seed: int, epoch: int) -> int:
    """A 32-bit seed mixed from (seed, epoch), for the epoch's shuffle."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _train_epoch(
    module: ResNet3D,
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: str,
) -> float:
    """One pass over `loader`; the mean training loss per volume."""
    module.train()
    loss_fn = nn.BCEWithLogitsLoss()
    total, count = 0.0, 0
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.float16, enabled=scaler.is_enabled()):
            loss = loss_fn(module(xb), yb)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(xb)
        count += len(xb)
    return total / count


def _logits(
    module: ResNet3D, x: Volumes, device: str, batch_size: int, *, embed: bool
) -> torch.Tensor:
    """Logits (or embeddings, float32) on CPU, in eval mode and batches."""
    module.eval()
    out = []
    with (
        torch.inference_mode(),
        torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"),
    ):
        for batch in torch.from_numpy(x).split(batch_size):
            volumes = batch.unsqueeze(1).to(device, non_blocking=True)
            result = module.embed(volumes) if embed else module(volumes)
            out.append(result.float().cpu())
    return torch.cat(out)
