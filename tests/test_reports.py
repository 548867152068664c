"""HTML reports are self-contained, escaped and deterministic; key images are stable PNGs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk

from radflow.models.metrics import evaluate
from radflow.reports.html import NOTICE, model_report, study_report
from radflow.reports.images import key_image_png

PNG = b"\x89PNG\r\n\x1a\nfake"


def _study(**overrides: object) -> str:
    args: dict[str, object] = {
        "study_id": "S-7f3a9c",
        "score": 0.87654,
        "threshold": 0.5,
        "model_id": "model-20240101-abc123",
        "features": {"original_shape_VoxelVolume": 1234.5, "original_firstorder_Mean": 88.25},
        "qc": {"slices": 120, "spacing_mm": "0.8×0.8×1.5"},
        "key_image_png": PNG,
    }
    return study_report(**(args | overrides))  # type: ignore[arg-type]


def _assert_self_contained(page: str) -> None:
    assert '<img src="data:image/png;base64,' in page
    assert "http" not in page.lower()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert NOTICE in page


def test_study_report_content() -> None:
    page = _study()
    _assert_self_contained(page)
    assert "radflow study report" in page
    assert "S-7f3a9c" in page
    assert "0.877" in page
    assert "model-20240101-abc123" in page
    assert "positive" in page
    assert "original_shape_VoxelVolume" in page
    assert "slices" in page
    assert page == _study()  # no timestamps


def test_study_report_negative_call() -> None:
    assert ">negative<" in _study(score=0.2)


def test_study_report_escapes_values() -> None:
    page = _study(
        study_id="<script>alert(1)</script>",
        qc={"note": "<script>x</script>"},
        features={"<b>f</b>": 1.0},
    )
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;f&lt;/b&gt;" in page


def test_model_report_content_and_escaping() -> None:
    evaluation = evaluate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], n_train=30)
    importances = {f"feature_{i:02d}": i / 100 for i in range(20)} | {"<script>": 0.5}
    page = model_report(
        model_id="model-xyz",
        evaluation=evaluation,
        promoted=False,
        reason="AUC 0.750 < champion 0.800 <script>",
        feature_importances=importances,
        roc_png=PNG,
    )
    _assert_self_contained(page)
    assert "model-xyz" in page and "0.750" in page and "not promoted" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "feature_19" in page and "feature_05" not in page  # only the top ten


def _phantom() -> tuple[sitk.Image, sitk.Image]:
    z, y, x = np.mgrid[:20, :32, :32] - np.array([10, 16, 16])[:, None, None, None]
    hu = np.where(x**2 + y**2 < 14**2, 40.0, -1000.0) + 100.0 * (x**2 + y**2 + (2 * z) ** 2 < 36)
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing((0.7, 0.7, 2.0))
    mask = sitk.GetImageFromArray((hu > 100).astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def test_key_image_is_deterministic_png() -> None:
    image, mask = _phantom()
    png = key_image_png(image, mask)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert key_image_png(image, mask) == png
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (720, 240)  # 9 × 3 inches at 80 dpi


def test_key_image_rejects_empty_mask() -> None:
    image, mask = _phantom()
    with pytest.raises(ValueError, match="empty"):
        key_image_png(image, mask * 0)
