"""Which series an annotation references, and the check that it is the study's series."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from support.annotations import CTSeries, liver_ct, liver_seg, rtstruct_ct, rtstruct_file
from support.realdata import pyradiomics_case

from radflow.annotations import check_references, referenced_series
from radflow.errors import QuarantineError


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory) -> CTSeries:
    return liver_ct(tmp_path_factory.mktemp("liver"))


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> CTSeries:
    return rtstruct_ct(tmp_path_factory.mktemp("rt"))


def test_the_referenced_series_is_read_from_seg_and_rtstruct(
    liver: CTSeries, planned: CTSeries
) -> None:
    assert referenced_series(liver_seg()) == liver.series_uid
    assert referenced_series(rtstruct_file()) == planned.series_uid


def test_a_label_map_references_nothing_and_passes(tmp_path: Path) -> None:
    _, label = pyradiomics_case("lung1")
    assert referenced_series(label) is None
    check_references(label, "1.2.3", set())


def test_references_into_the_study_series_pass(liver: CTSeries, planned: CTSeries) -> None:
    check_references(liver_seg(), liver.series_uid, set(liver.sop_uids))
    check_references(rtstruct_file(), planned.series_uid, set(planned.sop_uids))


def test_another_series_is_refused_with_counts_and_no_uids(liver: CTSeries) -> None:
    with pytest.raises(QuarantineError) as caught:
        check_references(liver_seg(), "1.2.826.0.1.99", set(liver.sop_uids))
    assert caught.value.reason == "annotation references another series"
    assert caught.value.detail == "1 of 1 referenced series are not the study's series"
    assert liver.series_uid not in str(caught.value)


def test_instances_missing_from_the_series_are_refused_with_counts(liver: CTSeries) -> None:
    kept = set(sorted(liver.sop_uids)[:1])
    with pytest.raises(QuarantineError) as caught:
        check_references(liver_seg(), liver.series_uid, kept)
    assert caught.value.reason == "annotation references another series"
    assert caught.value.detail == (
        "2 of 3 referenced instances are not in the series (1 instances)"
    )
    assert not any(uid in str(caught.value) for uid in liver.sop_uids)


def test_contour_image_references_are_checked_too(planned: CTSeries, tmp_path: Path) -> None:
    ds = pydicom.dcmread(rtstruct_file(), force=True)
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    image = pydicom.Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99.1"
    contour.ContourImageSequence = [image]
    ds.save_as(tmp_path / "rt.dcm")
    with pytest.raises(QuarantineError) as caught:
        check_references(tmp_path / "rt.dcm", planned.series_uid, set(planned.sop_uids))
    assert caught.value.detail == (
        "1 of 1 referenced instances are not in the series (5 instances)"
    )


def test_an_annotation_naming_no_series_is_refused(tmp_path: Path) -> None:
    ds = pydicom.dcmread(liver_seg())
    del ds.ReferencedSeriesSequence
    ds.save_as(tmp_path / "orphan.dcm")
    with pytest.raises(QuarantineError) as caught:
        check_references(tmp_path / "orphan.dcm", "1.2.3", set())
    assert caught.value.reason == "annotation references no series"
