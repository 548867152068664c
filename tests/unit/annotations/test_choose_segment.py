"""Which segment is the ROI: the settings' RoiSelection applied by `choose_segment`."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from radflow.annotations import Segment, choose_segment
from radflow.config import RoiSelection, Settings, load_settings
from radflow.errors import ConfigError


def _segments() -> list[Segment]:
    mask = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    return [
        Segment(3, "Nodule", "SCT:27925004", mask),
        Segment(1, "Liver", "SRT:T-62000", mask),
        Segment(2, "lesion", "SCT:108369006", mask),
    ]


def test_with_no_criterion_the_lowest_number_is_the_roi() -> None:
    assert choose_segment(_segments()).number == 1


@pytest.mark.parametrize(
    ("criteria", "number"),
    [
        ({"label": "LESION"}, 2),
        ({"number": 3}, 3),
        ({"code": "SRT:T-62000"}, 1),
        ({"label": "nodule", "code": "SCT:27925004"}, 3),
    ],
)
def test_label_number_and_code_select(criteria: dict[str, object], number: int) -> None:
    assert choose_segment(_segments(), **criteria).number == number  # type: ignore[arg-type]


def test_the_settings_default_selects_the_first_segment() -> None:
    selection = Settings().preprocess.roi_segment
    assert selection == RoiSelection()
    chosen = choose_segment(
        _segments(), label=selection.label, number=selection.number, code=selection.code
    )
    assert chosen.number == 1
    assert selection.tolerance_mm == 0.5


def test_the_selection_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADFLOW_PREPROCESS__ROI_SEGMENT__LABEL", "Liver")
    monkeypatch.setenv("RADFLOW_PREPROCESS__ROI_SEGMENT__TOLERANCE_MM", "1.5")
    selection = load_settings().preprocess.roi_segment
    assert (selection.label, selection.tolerance_mm) == ("Liver", 1.5)


def test_a_code_without_a_scheme_is_a_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADFLOW_PREPROCESS__ROI_SEGMENT__CODE", "108369006")
    with pytest.raises(ConfigError, match="RADFLOW_PREPROCESS__ROI_SEGMENT__CODE"):
        load_settings()
