"""The training paths on a CUDA device, which CI (no GPU) cannot run: skipped without one.

On a GPU machine: `make test-gpu`. What they hold to is what a GPU work pool needs: the
models train there (float16 autocast, a gradient scaler), learn, resume from their own
checkpoint, and what they leave in the lake scores on a machine that has no GPU.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from support.seg_spheres import SPACING, TINY, sphere_case
from support.volumes import FAST, volumes

from radflow.models.cnn import CNNClassifier
from radflow.segmentation.model import SegmentationModel
from radflow.segmentation.sliding import probabilities
from radflow.segmentation.train import dice_score, train_segmentation

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

ROOT = Path(__file__).resolve().parents[2]


def _without_a_gpu(script: str, tmp_path: Path) -> np.ndarray:
    """Run `script` (which saves `out.npy` in its working folder) where torch sees no GPU."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": path}
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env, check=True
    )
    return np.load(tmp_path / "out.npy")


def test_the_cnn_trains_on_cuda_and_scores_where_there_is_no_gpu(tmp_path: Path) -> None:
    x, y = volumes(48, seed=0, size=24)
    x_val, y_val = volumes(24, seed=1, size=24)
    x_test, y_test = volumes(40, seed=2, size=24)
    params = {**FAST, "epochs": 10, "seed": 0}
    model = CNNClassifier(**params, device="auto", checkpoint_dir=str(tmp_path / "ckpt"))
    model.fit(x, y, x_val, y_val)
    assert model.device_ == "cuda"
    assert next(model.module_.parameters()).device.type == "cpu"  # picklable anywhere
    on_gpu = model.predict_proba(x_test)[:, 1]
    assert roc_auc_score(y_test, on_gpu) >= 0.9
    # The finished training's checkpoint (module, optimizer and the gradient scaler's state)
    # is read back on the GPU: the same weights, no epoch trained again.
    again = CNNClassifier(**params, device="cuda", checkpoint_dir=str(tmp_path / "ckpt"))
    again.fit(x, y, x_val, y_val)
    assert again.resumed_from_epoch_ == len(model.history_)
    first, resumed = model.module_.state_dict(), again.module_.state_dict()
    assert first.keys() == resumed.keys()
    assert all(torch.equal(first[k], resumed[k]) for k in first)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    np.save(tmp_path / "x.npy", x_test)
    on_cpu = _without_a_gpu(
        """
        import pickle, numpy as np, torch
        assert not torch.cuda.is_available()
        model = pickle.loads(open("model.pkl", "rb").read())
        np.save("out.npy", model.predict_proba(np.load("x.npy"))[:, 1])
        """,
        tmp_path,
    )
    # float16 autocast on the GPU, float32 on the CPU: the same model within rounding.
    np.testing.assert_allclose(on_cpu, on_gpu, atol=2e-2)
    assert roc_auc_score(y_test, on_cpu) >= 0.9


def test_the_segmentation_model_trains_on_cuda_and_infers_where_there_is_no_gpu(
    tmp_path: Path,
) -> None:
    params = TINY.model_copy(
        update={"device": "cuda", "epochs": 12, "samples_per_epoch": 16, "patience": 4}
    )
    train = [sphere_case(seed) for seed in range(4)]
    validation = [sphere_case(seed) for seed in (10, 11)]
    result = train_segmentation(train, validation, params, spacing_mm=SPACING, seed=0)
    assert result.device == "cuda"
    best = result.history[result.best_epoch - 1][2]
    assert best is not None and best >= 0.8
    case = validation[0]
    on_gpu = probabilities(result.model.network("cuda"), case.image, params, "cuda")
    (tmp_path / "model.pt").write_bytes(result.model.to_bytes())
    np.save(tmp_path / "image.npy", case.image)
    on_cpu = _without_a_gpu(
        """
        import numpy as np, torch
        from pathlib import Path
        from radflow.segmentation.model import SegmentationModel
        from radflow.segmentation.sliding import probabilities
        assert not torch.cuda.is_available()
        model = SegmentationModel.from_bytes(Path("model.pt").read_bytes())
        cpu = model.params.model_copy(update={"device": "cpu"})
        np.save("out.npy", probabilities(model.network(), np.load("image.npy"), cpu))
        """,
        tmp_path,
    )
    np.testing.assert_allclose(on_cpu, on_gpu, atol=2e-2)
    restored = SegmentationModel.from_bytes(result.model.to_bytes())
    assert dice_score(on_cpu > restored.params.threshold, case.mask > 0) >= 0.8
