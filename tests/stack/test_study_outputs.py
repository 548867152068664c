"""A scored study's reports as people and PACS get them, from a lake built by the real stages:
HTML (parsed, and rendered by headless Chromium), PDF (its text read back, its pages turned
into PNGs), a DICOM SR and an Encapsulated PDF (read back by pydicom and highdicom). None of
them may carry a PHI string of the raw headers."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import highdicom as hd
import matplotlib.image as mpimg
import numpy as np
import pydicom
import pypdf
import pytest
from support.browser import chromium
from support.lakes import TrainedLake
from support.phi import phi_strings

from radflow.lake import Lake, Score
from radflow.reports.dicom import ENCAPSULATED_PDF, SCORE, THRESHOLD
from radflow.reports.facts import NOTICE
from radflow.stages.report import write_study_report
from radflow.stages.score import score_study

pytestmark = pytest.mark.stack
OUTPUT = Path(__file__).resolve().parents[1] / "output"


@dataclass(frozen=True)
class Scored:
    lake: Lake
    folder: Path  # the report folder in the lake
    score: Score
    deid_study_uid: str
    deid_series: set[str]
    phi: set[str]


@pytest.fixture(scope="module")
def scored(trained: TrainedLake, tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """Twelve synthetic studies through every stage (no Prefect), then one of them reported."""
    built = trained.copy(tmp_path_factory.mktemp("reports"))
    lake, deids, rows, model = built.lake, built.deids, built.rows, built.model
    # A study with a second series, so its report has a registration check.
    pick = next(i for i, d in enumerate(deids) if len(lake.manifest(d).series) == 2)
    score = score_study(lake, rows[pick], model)
    html = write_study_report(lake, score)
    manifest = lake.manifest(deids[pick])
    return Scored(
        lake=lake,
        folder=built.root / html.rsplit("/", 1)[0],
        score=lake.score(score),
        deid_study_uid=manifest.study_uid,
        deid_series={s.series_uid for s in manifest.series},
        phi=phi_strings(built.studies),
    )


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _no_phi(data: str | bytes, phi: set[str]) -> None:
    text = data if isinstance(data, str) else data.decode("latin-1")
    leaked = sorted(s for s in phi if s in text)
    assert not leaked, f"PHI in a report: {len(leaked)} strings"


def test_report_set_is_complete(scored: Scored) -> None:
    names = sorted(p.name for p in scored.folder.iterdir())
    assert names == ["report-pdf.dcm", "seg.dcm", "sr.dcm", "study.html", "study.pdf"]


def test_html_has_the_score_the_model_and_no_phi(scored: Scored) -> None:
    page = (scored.folder / "study.html").read_text()
    parser = _Text()
    parser.feed(page)
    parser.close()
    text = " ".join(parser.text)
    assert f"{scored.score.probability:.3f}" in text
    assert str(scored.score.model_id) in text
    assert str(scored.score.study_id) in text
    assert NOTICE in text
    assert parser.tags.count("img") == 2  # key images and the registration check
    _no_phi(page, scored.phi)


def test_pdf_text_has_the_score_and_no_phi(scored: Scored) -> None:
    pdf = (scored.folder / "study.pdf").read_bytes()
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) == 2
    assert f"Score (calibrated probability) {scored.score.probability:.3f}" in text
    assert str(scored.score.model_id) in text and NOTICE in text
    _no_phi(text, scored.phi)
    _no_phi(pdf, scored.phi)


def test_pdf_pages_convert_to_png(scored: Scored, tools: dict[str, str]) -> None:
    out = OUTPUT / "study-pdf"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(
        [
            tools["pdftoppm"],
            "-png",
            "-r",
            "60",
            str(scored.folder / "study.pdf"),
            str(out / "page"),
        ],
        check=True,
        timeout=60,
    )
    pages = sorted(out.glob("page-*.png"))
    assert len(pages) == 2
    first = mpimg.imread(pages[0])
    assert first.std() > 0.05  # text and images, not a blank page


def test_sr_holds_the_score_in_the_deidentified_study(scored: Scored) -> None:
    path = scored.folder / "sr.dcm"
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert ds.StudyInstanceUID == scored.deid_study_uid
    assert ds.SeriesInstanceUID not in scored.deid_series
    sr = hd.sr.srread(path)  # highdicom parses (and so validates) the TID 1500 tree
    group = sr.content.get_image_measurement_groups()[0]
    values = {m.name.value: m.value for m in group.get_measurements()}
    assert values[SCORE.value] == pytest.approx(scored.score.probability, abs=1e-6)
    assert values[THRESHOLD.value] == pytest.approx(scored.score.threshold, abs=1e-6)
    assert str(scored.score.model_id) in path.read_bytes().decode("latin-1")
    _no_phi(path.read_bytes(), scored.phi)


def test_encapsulated_pdf_is_the_report_in_the_same_study(scored: Scored) -> None:
    ds = pydicom.dcmread(scored.folder / "report-pdf.dcm")
    assert ds.SOPClassUID == ENCAPSULATED_PDF
    assert ds.StudyInstanceUID == scored.deid_study_uid
    assert ds.SeriesInstanceUID not in scored.deid_series
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    pdf = (scored.folder / "study.pdf").read_bytes()
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == pdf
    _no_phi((scored.folder / "report-pdf.dcm").read_bytes(), scored.phi)


def test_chromium_renders_the_html(scored: Scored, tools: dict[str, str], tmp_path: Path) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "study-report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [
            *chromium(tools["chromium"], tmp_path / "profile", 1000, 1400),
            f"--screenshot={shot}",
            (scored.folder / "study.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1000)
    assert pixels.std() > 0.05
    # The red notice box and the key images are drawn: some pixels are strongly red.
    red = (pixels[..., 0] > 0.5) & (pixels[..., 1] < 0.2) & (pixels[..., 2] < 0.2)
    assert np.count_nonzero(red) > 100
