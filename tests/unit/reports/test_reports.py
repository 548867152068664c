"""HTML reports are self-contained, escaped and deterministic; key images are stable PNGs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radflow.models.metrics import evaluate
from radflow.reports.facts import NOTICE, StudyFacts, report_date
from radflow.reports.html import model_report, study_report
from radflow.reports.images import key_image_png

PNG = b"\x89PNG\r\n\x1a\nfake"


def _facts(**overrides: object) -> StudyFacts:
    args: dict[str, object] = {
        "study_id": "S-7f3a9c",
        "score": 0.87654,
        "threshold": 0.5,
        "model_id": "model-20240101-abc123",
        "model_version": "0.1.0",
        "report_date": "20261123",
        "acquisition": {"Modality": "CT", "Series (instances)": "48, 40"},
        "features": {"original_shape_VoxelVolume": 1234.5, "original_firstorder_Mean": 88.25},
        "qc": {"slices": 120, "spacing_mm": "0.8×0.8×1.5"},
        "key_image_png": PNG,
    }
    args |= overrides
    args.setdefault("positive", args["score"] >= args["threshold"])  # type: ignore[operator]
    return StudyFacts(**args)  # type: ignore[arg-type]


def _study(**overrides: object) -> str:
    return study_report(_facts(**overrides))


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


def test_study_report_shows_acquisition_version_date_and_registration() -> None:
    page = _study(registration_png=PNG)
    assert "2026-11-23" in page and "radflow 0.1.0" in page and "48, 40" in page
    assert page.count('<img src="data:image/png;base64,') == 2
    assert _study().count('<img src="data:image/png;base64,') == 1


def test_report_date_follows_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1795000000")  # 2026-11-18 UTC
    assert report_date() == "20261118"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert re.fullmatch(r"20\d{6}", report_date())


def _png() -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 1))
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).imshow(np.eye(8))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def test_study_pdf_is_deterministic_and_says_the_score() -> None:
    import io

    import pypdf

    from radflow.reports.pdf import study_report_pdf

    facts = _facts(key_image_png=_png(), registration_png=_png())
    pdf = study_report_pdf(facts)
    assert pdf.startswith(b"%PDF") and pdf == study_report_pdf(facts)
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Score (calibrated probability) 0.877" in text
    assert "Call positive" in text and NOTICE in text
    assert (
        "Score (calibrated probability) 0.200"
        in pypdf.PdfReader(io.BytesIO(study_report_pdf(_facts(key_image_png=_png(), score=0.2))))
        .pages[0]
        .extract_text()
    )


def test_dicom_outputs_are_deterministic_and_join_the_evidence_study() -> None:
    import io

    import pydicom
    from pydicom.data import get_testdata_file

    from radflow.reports.dicom import encapsulated_pdf, score_sr

    evidence = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    facts = _facts(key_image_png=_png())

    def saved(ds: pydicom.Dataset) -> bytes:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    sr = score_sr(facts, [evidence], "reports/v3/abc")
    assert saved(sr) == saved(score_sr(facts, [evidence], "reports/v3/abc"))
    assert sr.StudyInstanceUID == evidence.StudyInstanceUID
    assert sr.PatientID == evidence.PatientID
    assert sr.SeriesInstanceUID != evidence.SeriesInstanceUID
    assert sr.ContentDate == "20261123"
    other = score_sr(facts, [evidence], "reports/v3/def")
    assert other.SOPInstanceUID != sr.SOPInstanceUID  # name-based on the report's address
    pdf = b"%PDF-1.4 odd!"  # 13 bytes
    doc = encapsulated_pdf(facts, pdf, evidence, "reports/v3/abc")
    back = pydicom.dcmread(io.BytesIO(saved(doc)))
    assert back.EncapsulatedDocument == pdf + b"\0"  # padded to even length
    assert back.EncapsulatedDocumentLength == len(pdf)
    assert back.StudyInstanceUID == evidence.StudyInstanceUID
    assert back.SeriesInstanceUID not in (sr.SeriesInstanceUID, evidence.SeriesInstanceUID)


@pytest.mark.parametrize(
    ("score", "positive", "call"),
    [
        (0.87654, True, "Positive"),
        (0.49999, False, "Negative"),
        # The score's own call, made before its probability was rounded to the threshold's
        # value: a tie stays positive, and the SR never recomputes it.
        (0.5, True, "Positive"),
        (0.5, False, "Negative"),
    ],
)
def test_the_sr_states_the_call_beside_the_score(score: float, positive: bool, call: str) -> None:
    """Read back as a PACS would (highdicom from the saved bytes): the score's group holds
    its call, SNOMED CT's Positive or Negative."""
    import io

    import highdicom as hd
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.sr.codedict import codes

    from radflow.reports.dicom import CALL, SCORE, score_sr

    evidence = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    buffer = io.BytesIO()
    score_sr(_facts(score=score, positive=positive), [evidence], "reports/v5/abc").save_as(
        buffer, enforce_file_format=True
    )
    sr = hd.sr.srread(io.BytesIO(buffer.getvalue()))
    (group,) = sr.content.get_image_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations(name=CALL)
    assert evaluation.value == getattr(codes.SCT, call)
    assert evaluation.name.meaning == "Call at the operating threshold"
    (measured,) = group.get_measurements(name=SCORE)
    assert measured.value == pytest.approx(round(score, 6))


def test_key_images_are_windowed_per_modality() -> None:
    """pydicom's MR_small (values 127..2145): CT's 40/400 window turns a quarter of the
    figure white; MR's own 1st..99th percentile window almost none."""
    import io

    import matplotlib.image as mpimg
    import pydicom
    from support.realdata import pydicom_file

    from radflow.reports.images import display_window

    plane = pydicom.dcmread(pydicom_file("MR_small.dcm")).pixel_array.astype(np.float32)
    volume = np.stack([plane] * 8)
    inside = np.zeros(volume.shape, np.uint8)
    inside[2:6, 20:40, 20:40] = 1
    image, mask = sitk.GetImageFromArray(volume), sitk.GetImageFromArray(inside)
    assert display_window(volume, "CT") == (-160.0, 240.0)
    low, high = np.percentile(volume, [1, 99])
    assert display_window(volume, "MR") == (pytest.approx(low), pytest.approx(high))
    white = {}
    for modality in ("CT", "MR"):
        pixels = mpimg.imread(io.BytesIO(key_image_png(image, mask, modality)))
        white[modality] = float((pixels[..., 0] > 0.99).mean())
    assert white["CT"] > 0.2 and white["MR"] < 0.02


def test_qc_rows_list_the_series_kept_and_dropped(tmp_path: Path) -> None:
    """The study report's QC table: series used and series left out, with the rule."""
    from support.realstudies import ct_series, real_object, topogram

    from radflow.config import SeriesRules
    from radflow.imaging.selection import group_studies, select_files
    from radflow.reports.facts import selection_rows

    ct_series(tmp_path, "s", "thin", 6, spacing_mm=2.5, number=3)
    ct_series(tmp_path, "s", "thick", 5, spacing_mm=5.0, number=2)
    topogram(tmp_path, "s")
    real_object(tmp_path, "s", "liver.dcm", number=300)
    (study,) = group_studies(p for p in tmp_path.rglob("*") if p.is_file()).values()
    selection, _ = select_files(study, SeriesRules())
    rows = selection_rows(selection)
    assert rows == {
        "Series kept": "CT #3 (6 slices) primary; CT #2 (5 slices) secondary",
        "Series dropped": "CT #1 (1 slice): localizer; SEG #300 (1 object): object",
    }
    page = _study(qc=rows)
    assert "CT #1 (1 slice): localizer" in page
    assert selection_rows(None) == {}
