"""The 3D CNN's training killed (SIGKILL, in a child process) resumes from its checkpoint to
exactly the model an uninterrupted training gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support.volumes import FAST, volumes

from radflow.models.cnn import CHECKPOINT_NAME, CNNClassifier

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return volumes(24, seed=0)


RESUME_PARAMS: dict[str, Any] = {**FAST, "epochs": 8}
# The child computes with this process's thread count: float sums depend on it, and an earlier
# test may have left OMP_NUM_THREADS in the environment the child inherits.
TRAIN_SCRIPT = """
import sys
import torch
torch.set_num_threads(int(sys.argv[2]))
from radflow.models.cnn import CNNClassifier
from support.volumes import volumes
from test_cnn_resume import RESUME_PARAMS
CNNClassifier(**RESUME_PARAMS, checkpoint_dir=sys.argv[1]).fit(*volumes(24, seed=0))
"""


def test_killed_training_resumes_to_the_same_model(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    killed_dir, full_dir = tmp_path / "killed", tmp_path / "full"
    checkpoint = killed_dir / CHECKPOINT_NAME
    path = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", TRAIN_SCRIPT, str(killed_dir), str(torch.get_num_threads())],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            while not checkpoint.exists() and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint after 60 s"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()  # a no-op when it is gone already
            returncode = proc.wait()
    assert checkpoint.exists(), (tmp_path / "stderr.txt").read_text()
    # Killed mid-training (-SIGKILL) or, rarely, finished before the kill (0).
    assert returncode in (-signal.SIGKILL, 0), (tmp_path / "stderr.txt").read_text()

    resumed = CNNClassifier(**RESUME_PARAMS, checkpoint_dir=str(killed_dir)).fit(*data)
    if returncode == 0:
        assert resumed.resumed_from_epoch_ == RESUME_PARAMS["epochs"]
    else:
        assert 1 <= resumed.resumed_from_epoch_ < RESUME_PARAMS["epochs"]
    assert len(resumed.history_) == RESUME_PARAMS["epochs"]

    full = CNNClassifier(**RESUME_PARAMS, checkpoint_dir=str(full_dir)).fit(*data)
    assert full.resumed_from_epoch_ == 0
    assert resumed.history_ == full.history_
    for name, value in full.module_.state_dict().items():
        assert torch.equal(resumed.module_.state_dict()[name], value), name
    assert np.array_equal(resumed.predict_proba(data[0]), full.predict_proba(data[0]))
