"""The study report as a PDF drawn with matplotlib's PDF backend: no browser and no system
library needed, so any worker can write it, and no timestamp, so the bytes are reproducible."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib.image as mpimg
from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from radflow.reports.facts import NOTICE, StudyFacts

_A4 = (8.27, 11.69)


def _rows(ax: Axes, top: float, title: str, rows: Sequence[tuple[str, object]]) -> float:
    """Draw a two-column table of text from `top` down; returns the next free height."""
    ax.text(0.0, top, title, fontsize=11, weight="bold", va="top")
    y = top - 0.03
    for name, value in rows:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        ax.text(0.02, y, name, fontsize=8, va="top")
        ax.text(0.55, y, text[:60], fontsize=8, va="top", family="monospace")
        y -= 0.022
    return y - 0.02


def _image(fig: Figure, png: bytes, box: tuple[float, float, float, float], title: str) -> None:
    ax = fig.add_axes(box)
    ax.imshow(mpimg.imread(io.BytesIO(png), format="png"))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def study_report_pdf(facts: StudyFacts) -> bytes:
    """Two A4 pages: the result, acquisition and key images; then QC and key features."""
    buffer = io.BytesIO()
    metadata = {"Title": f"radflow study report {facts.study_id}", "CreationDate": None}
    with PdfPages(buffer, metadata=metadata) as pdf:
        fig = Figure(figsize=_A4)
        ax = fig.add_axes((0.08, 0.05, 0.84, 0.9))
        ax.set_axis_off()
        ax.text(0.0, 1.0, "radflow study report", fontsize=16, weight="bold", va="top")
        ax.text(0.0, 0.96, NOTICE, fontsize=10, color="#b00000", weight="bold", va="top")
        y = _rows(ax, 0.92, "Result", facts.summary())
        y = _rows(ax, y, "Acquisition", list(facts.acquisition.items()))
        _image(fig, facts.key_image_png, (0.08, 0.12, 0.84, 0.28), "Key images with the ROI")
        pdf.savefig(fig)

        fig = Figure(figsize=_A4)
        ax = fig.add_axes((0.08, 0.05, 0.84, 0.9))
        ax.set_axis_off()
        y = _rows(ax, 1.0, "Quality control", list(facts.qc.items()))
        y = _rows(ax, y, "Key features", facts.key_features())
        if facts.registration_png is not None:
            _image(fig, facts.registration_png, (0.2, 0.05, 0.6, 0.3), "Registration check")
        pdf.savefig(fig)
    return buffer.getvalue()
