"""Training checkpoints written so a kill never leaves half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


def save_checkpoint(
    path: Path,
    fingerprint: str,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: object,
) -> None:
    """Weights, optimizer, AMP scaler and the training's progress (a dataclass's fields) in
    `path`, atomically: a temporary file in the same folder, fsynced, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "fingerprint": fingerprint,
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "progress": vars(progress),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
