"""No third-party warning when radflow writes its DICOM results, and the model report's own
warning where a split is too small to trust."""

from __future__ import annotations

import warnings
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from radflow.dicom.deid import patient_pseudonym
from radflow.models.metrics import evaluate
from radflow.reports.dicom import caret_patient_name, encapsulated_pdf, score_sr
from radflow.reports.facts import StudyFacts
from radflow.reports.html import model_report, small_split_warnings

PNG = b"\x89PNG\r\n\x1a\nfake"


def _facts() -> StudyFacts:
    return StudyFacts(
        study_id="S-7f3a9c",
        score=0.87654,
        threshold=0.5,
        positive=True,
        model_id="model-20240101-abc123",
        model_version="0.1.0",
        report_date="20261123",
        acquisition={"Modality": "CT"},
        features={"original_shape_VoxelVolume": 1234.5},
        qc={"slices": 120},
        key_image_png=PNG,
    )


def _pseudonymised() -> pydicom.Dataset:
    """pydicom's CT_small as the lake holds it: the patient's name is the pseudonym."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = ds.PatientID = patient_pseudonym(b"k" * 32, "P1")
    return ds


def test_the_pseudonym_alone_makes_highdicom_warn() -> None:
    with pytest.warns(UserWarning, match="single component"):
        score_sr(_facts(), [_pseudonymised()], "reports/v6/abc")


def test_sr_and_pdf_of_a_pseudonymised_study_raise_no_warning() -> None:
    evidence = caret_patient_name(_pseudonymised())
    facts = _facts()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sr = score_sr(facts, [evidence], "reports/v6/abc")
        doc = encapsulated_pdf(facts, b"%PDF-1.4\n%%EOF\n", evidence, "reports/v6/abc")
    assert str(sr.PatientName) == str(doc.PatientName) == evidence.PatientID + "^"
    assert sr.PatientID == evidence.PatientID
    assert caret_patient_name(evidence).PatientName == sr.PatientName  # applied once only


def test_small_splits_are_named_class_by_class() -> None:
    counts = {
        "fit": {"negative": 40, "positive": 35},
        "validation": {"negative": 20, "positive": 19},
        "test": {"negative": 1, "positive": 6},
    }
    lines = small_split_warnings(counts)
    assert lines == [
        "the validation split holds 19 positive studies (fewer than 20): its metrics and their"
        " intervals are unreliable",
        "the test split holds 1 negative study (fewer than 20): its metrics and their intervals"
        " are unreliable",
        "the test split holds 6 positive studies (fewer than 20): its metrics and their"
        " intervals are unreliable",
    ]
    page = model_report(
        model_id="model-xyz",
        evaluation=evaluate(
            [0, 1, 1, 1, 1, 1, 1], [0.1, 0.6, 0.7, 0.8, 0.9, 0.9, 0.95], n_train=75
        ),
        promoted=True,
        reason="no champion yet",
        feature_importances={"f": 1.0},
        roc_png=PNG,
        split_counts=counts,
    )
    assert page.count('<p class="warning">Warning: ') == 3
    assert page.index("1 negative study") < page.index("<h2>Decision</h2>")  # at the top
    big = {part: {"negative": 20, "positive": 20} for part in ("fit", "validation", "test")}
    assert small_split_warnings(big) == []
    assert "Warning:" not in _plain_report(split_counts=big)


def _plain_report(**options: Any) -> str:
    """A model report of a well-sized model but for `options`."""
    return model_report(
        model_id="m",
        evaluation=evaluate([0, 1], [0.2, 0.8], n_train=40),
        promoted=True,
        reason="r",
        feature_importances={},
        roc_png=PNG,
        **options,
    )


def test_a_model_left_uncalibrated_is_warned_about() -> None:
    page = _plain_report(calibration="none")
    assert page.count('<p class="warning">Warning: calibration not applied') == 1
    assert page.index("calibration not applied") < page.index("<h2>Decision</h2>")
