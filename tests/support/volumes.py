"""Small noisy volumes with a sphere for the CNN's tests: bright in positives, dark in negatives."""

from __future__ import annotations

from typing import Any

import numpy as np

SIZE = 20
# Small and quick: the tests check the mechanics, not the model's quality.
FAST: dict[str, Any] = {"width": 4, "batch_size": 8, "learning_rate": 3e-3}


def volumes(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Noisy volumes with one sphere somewhere: bright in positives (label 1), dark in negatives."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rng.shuffle(y)
    grid = np.indices((size,) * 3, dtype=np.float32)
    x = rng.normal(0.4, 0.08, (n, size, size, size)).astype(np.float32)
    for i in range(n):
        centre = rng.uniform(0.3 * size, 0.7 * size, 3).astype(np.float32)
        radius = rng.uniform(0.12 * size, 0.22 * size)
        inside = ((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2
        x[i][inside] = 0.8 if y[i] else 0.1
    return x, y
