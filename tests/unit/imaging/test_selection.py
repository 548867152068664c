"""Series selection on real files: which series of a study is its volume, which are
dropped and by which rule, which are objects, and why a study without a usable primary is
set aside. Studies are built from pydicom's, pydicom-data's and nibabel's files
(`support.realstudies`); the expected lists are written out in full."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import UID_dictionary
from support.realstudies import (
    CORONAL,
    DICOMDIR_TESTS,
    copy_tree,
    ct_series,
    mosaic,
    real_file,
    real_object,
    topogram,
    uid,
)

from radflow.config import SeriesRules, load_settings
from radflow.errors import ConfigError, QuarantineError
from radflow.imaging.inspect import format_inspection, inspect_path
from radflow.imaging.selection import (
    OBJECT_SOP_CLASSES,
    group_studies,
    require_primary,
    select_files,
)
from radflow.lake.records import SeriesSelection

RULES = SeriesRules()
DERIVED = "derived image (ImageType DERIVED\\SECONDARY), not ORIGINAL\\PRIMARY"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _select(
    folder: Path, rules: SeriesRules = RULES, preferred: str | None = None
) -> tuple[SeriesSelection, list]:
    (study,) = group_studies(_files(folder)).values()
    return select_files(study, rules, preferred_series_uid=preferred)


def _verdicts(selection: SeriesSelection) -> list[tuple[str, int, str, str]]:
    """(modality, frames, role, rule) per image series, in the selection's order."""
    return [(c.modality, c.frames, c.role, c.rule) for c in selection.series]


def _reason(folder: Path) -> str:
    selection, summaries = _select(folder)
    with pytest.raises(QuarantineError) as caught:
        require_primary(selection, summaries)
    return caught.value.reason


# --------------------------------------------------------------------------- objects


def test_non_image_sop_classes_come_from_pydicoms_dictionary() -> None:
    kinds = {uid: kind for uid, (kind, _) in OBJECT_SOP_CLASSES.items()}
    assert kinds["1.2.840.10008.5.1.4.1.1.66.4"] == "SEG"
    assert kinds["1.2.840.10008.5.1.4.1.1.66.7"] == "SEG"  # LABELMAP, newer than pydicom 3.0
    assert kinds["1.2.840.10008.5.1.4.1.1.481.3"] == "RTSTRUCT"
    assert kinds["1.2.840.10008.5.1.4.1.1.88.11"] == "SR"  # Basic Text SR
    assert kinds["1.2.840.10008.5.1.4.1.1.88.34"] == "SR"  # Comprehensive 3D SR
    assert kinds["1.2.840.10008.5.1.4.1.1.88.59"] == "KO"
    assert kinds["1.2.840.10008.5.1.4.1.1.88.67"] == "RDSR"  # X-Ray Radiation Dose SR
    assert kinds["1.2.840.10008.5.1.4.1.1.88.76"] == "RDSR"  # Enhanced X-Ray Radiation Dose
    assert kinds["1.2.840.10008.5.1.4.1.1.11.1"] == "PR"
    assert kinds["1.2.840.10008.5.1.4.1.1.104.1"] == "DOC"  # Encapsulated PDF
    assert kinds["1.2.840.10008.5.1.4.1.1.104.2"] == "DOC"  # Encapsulated CDA
    assert kinds["1.2.840.10008.5.1.4.1.1.7"] == "SC"
    assert kinds["1.2.840.10008.5.1.4.1.1.7.2"] == "SC"  # multi-frame grayscale byte SC
    assert kinds["1.2.840.10008.5.1.4.1.1.66"] == "RAW"
    # Every SR class pydicom names is an object, and no CT or MR image class is.
    srs = {u for u, e in UID_dictionary.items() if e[1] == "SOP Class" and "SR Storage" in e[0]}
    assert len(srs) == 22 and srs <= set(kinds)
    images = {u for u, e in UID_dictionary.items() if e[4] in RULES.sop_classes}
    assert len(images) == 6 and not images & set(kinds)


def test_objects_are_listed_as_objects_never_as_series(tmp_path: Path) -> None:
    ct_series(tmp_path, "s", "axial", 5)
    real_object(tmp_path, "s", "rtstruct.dcm", number=301)
    real_object(tmp_path, "s", "liver.dcm", number=302)
    selection, _ = _select(tmp_path)
    assert _verdicts(selection) == [("CT", 5, "primary", "")]
    assert [(o.kind, o.modality, o.sop_class, o.instances) for o in selection.objects] == [
        ("RTSTRUCT", "RTSTRUCT", "RT Structure Set Storage", 1),
        ("SEG", "SEG", "Segmentation Storage", 1),
    ]
    assert selection.primary == uid("series s axial")
    assert selection.primary_rule == "thinnest recon, then most slices"


def test_a_study_of_objects_only_has_no_image_series(tmp_path: Path) -> None:
    real_object(tmp_path, "s", "rtstruct.dcm")
    assert _reason(tmp_path) == "no image series: only RTSTRUCT"
    real_object(tmp_path, "s", "liver.dcm", number=302)
    assert _reason(tmp_path) == "no image series: only RTSTRUCT, SEG"


# --------------------------------------------------------------------------- rules


def test_topogram_coronal_reformat_and_thick_recon(tmp_path: Path) -> None:
    """The coronal series has the most images, the thick recon more than the thin one: the
    thin axial recon is the primary, the thick one a secondary, the rest dropped."""
    ct_series(tmp_path, "s", "thin", 6, spacing_mm=1.25, number=3)
    ct_series(tmp_path, "s", "thick", 10, spacing_mm=5.0, number=2)
    ct_series(tmp_path, "s", "coronal", 12, spacing_mm=2.0, number=4, orientation=CORONAL)
    topogram(tmp_path, "s")
    ct_series(
        tmp_path, "s", "mpr", 8, spacing_mm=3.0, number=5, image_type=("DERIVED", "SECONDARY")
    )
    selection, _ = _select(tmp_path)
    assert _verdicts(selection) == [
        ("CT", 6, "primary", ""),
        ("CT", 10, "secondary", ""),
        ("CT", 12, "dropped", "orientation"),
        ("CT", 8, "dropped", "derived"),
        ("CT", 1, "dropped", "localizer"),
    ]
    assert selection.primary == uid("series s thin")
    by_number = {c.series_number: c for c in selection.series}
    assert by_number[4].reason == (
        "coronal, not axial: slice normal 90.0 degrees off the patient's axis (tolerance 30)"
    )
    assert by_number[4].plane == "coronal" and by_number[4].normal_angle_degrees == 90.0
    assert by_number[1].reason == "localizer or scout (ImageType LOCALIZER): not a 3-D series"
    assert by_number[1].image_type == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert by_number[5].reason == DERIVED
    assert by_number[3].slice_thickness_mm == 1.25

    # Reformats when allowed; any orientation; a thickness range; description rules.
    loose = SeriesRules(allow_derived=True, axial_tolerance_degrees=None)
    roles = [(c.series_number, c.role) for c in _select(tmp_path, loose)[0].series]
    assert roles == [
        (3, "primary"),
        (4, "secondary"),
        (5, "secondary"),
        (2, "secondary"),
        (1, "dropped"),
    ]
    thick_only = SeriesRules(slice_thickness_mm=(2.0, 6.0))
    selection = _select(tmp_path, thick_only)[0]
    assert selection.primary == uid("series s thick")
    thin = next(c for c in selection.series if c.series_number == 3)
    assert (thin.role, thin.rule) == ("dropped", "slice_thickness")
    assert thin.reason == "slice thickness 1.25 mm outside 2 to 6 mm"


def test_the_annotated_series_wins_when_kept(tmp_path: Path) -> None:
    ct_series(tmp_path, "s", "thin", 6, spacing_mm=1.25, number=3)
    ct_series(tmp_path, "s", "thick", 10, spacing_mm=5.0, number=2)
    topogram(tmp_path, "s")
    thick = uid("series s thick")
    selection = _select(tmp_path, preferred=thick)[0]
    assert selection.primary == thick
    assert selection.primary_rule == "referenced by the study's annotation"
    # A dropped series cannot be the primary, even when referenced.
    assert _select(tmp_path, preferred=uid("series s topogram"))[0].primary == uid("series s thin")


def test_description_patterns(tmp_path: Path) -> None:
    import pydicom

    for name, n, description in (("a", 5, "CHEST 1.25 LUNG"), ("b", 6, "CHEST SOFT TISSUE")):
        for path in ct_series(tmp_path, "s", name, n, number=2 + n):
            ds = pydicom.dcmread(path)
            ds.SeriesDescription = description
            ds.save_as(path)
    rules = SeriesRules(description_exclude=(r"\blung\b",))
    selection = _select(tmp_path, rules)[0]
    assert [(c.frames, c.rule) for c in selection.series] == [
        (6, ""),
        (5, "description_exclude"),
    ]
    rules = SeriesRules(description_include=("lung",))
    assert [(c.frames, c.rule) for c in _select(tmp_path, rules)[0].series] == [
        (5, ""),
        (6, "description_include"),
    ]


def test_rules_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown SOP class keyword"):
        load_settings(preprocess={"series": {"sop_classes": ["CTImageStorag"]}})
    with pytest.raises(ConfigError, match="not a regular expression"):
        load_settings(preprocess={"series": {"description_exclude": ["(unclosed"]}})
    with pytest.raises(ConfigError, match="RADFLOW_PREPROCESS__SERIES__MIN_SLICES"):
        load_settings(preprocess={"series": {"min_slices": 2}})


# --------------------------------------------------------------------------- pydicom's studies


def test_dicomdirtests_ct_study_with_a_two_orientation_localizer(tmp_path: Path) -> None:
    """98892001: a good 5-slice CT series beside a 2-image localizer in two orientations."""
    copy_tree(DICOMDIR_TESTS / "98892001", tmp_path)
    selection, summaries = _select(tmp_path)
    assert _verdicts(selection) == [("CT", 5, "primary", ""), ("CT", 2, "dropped", "localizer")]
    assert require_primary(selection, summaries) == selection.series[0].series_uid
    assert selection.series[0].slice_thickness_mm == 2.5


def test_dicomdirtests_cr_and_ct_studies(tmp_path: Path) -> None:
    """77654033 holds two studies: three CR views, and 4 CT slices far apart (not a volume:
    read_series' own reason)."""
    copy_tree(DICOMDIR_TESTS / "77654033", tmp_path)
    studies = group_studies(_files(tmp_path))
    verdicts = {}
    for series in studies.values():
        selection, summaries = select_files(series, RULES)
        modality = selection.series[0].modality
        with pytest.raises(QuarantineError) as caught:
            require_primary(selection, summaries)
        verdicts[modality] = (_verdicts(selection), caught.value.reason)
    assert verdicts == {
        "CR": (
            [("CR", 1, "dropped", "projection")] * 3,
            "projection radiograph (CR/DX): not a 3-D series",
        ),
        "CT": ([("CT", 4, "dropped", "geometry")], "missing slices"),
    }


def test_dicomdirtests_mr_study(tmp_path: Path) -> None:
    """98892003's third study: one sagittal image, a 3-image three-plane localizer and 7
    derived radial projections."""
    copy_tree(DICOMDIR_TESTS / "98892003", tmp_path)
    studies = group_studies(_files(tmp_path))
    assert len(studies) == 3
    largest = max(studies.values(), key=lambda s: sum(len(v) for v in s.values()))
    selection, summaries = select_files(largest, RULES)
    assert [(c.series_number, c.frames, c.rule) for c in selection.series] == [
        (700, 7, "derived"),
        (2, 3, "min_slices"),
        (1, 1, "min_slices"),
    ]
    with pytest.raises(QuarantineError) as caught:
        require_primary(selection, summaries)
    assert caught.value.reason == DERIVED
    # Allowed, the radial projections are not one volume: read_series' own reason.
    selection, summaries = select_files(largest, SeriesRules(allow_derived=True))
    assert selection.series[0].rule == "geometry"
    with pytest.raises(QuarantineError) as caught:
        require_primary(selection, summaries)
    assert caught.value.reason == "inconsistent series"


# --------------------------------------------------------------------------- one real file


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("CT_small.dcm", "too few slices for a 3-D volume: 1 (need 4)"),
        ("MR_small.dcm", "too few slices for a 3-D volume: 1 (need 4)"),
        ("693_J2KR.dcm", "too few slices for a 3-D volume: 1 (need 4)"),
        ("eCT_Supplemental.dcm", "too few slices for a 3-D volume: 2 (need 4)"),
        ("emri_small.dcm", "missing geometry"),
    ],
)
def test_single_real_files_are_refused_with_a_reason(
    tmp_path: Path, name: str, reason: str
) -> None:
    real_file(tmp_path, "one", name)
    assert _reason(tmp_path) == reason


def test_siemens_mosaic(tmp_path: Path) -> None:
    mosaic(tmp_path)
    selection, _ = _select(tmp_path)
    assert _verdicts(selection) == [("MR", 2, "dropped", "mosaic")]
    assert _reason(tmp_path) == "Siemens MOSAIC: not unpacked"


def test_the_reason_is_the_series_that_got_furthest(tmp_path: Path) -> None:
    """A topogram and one axial slice: the axial slice's reason, not the topogram's."""
    topogram(tmp_path, "s")
    ct_series(tmp_path, "s", "axial", 1, number=2)
    real_object(tmp_path, "s", "liver.dcm")
    assert _reason(tmp_path) == "too few slices for a 3-D volume: 1 (need 4)"


# --------------------------------------------------------------------------- inspect


def test_inspect_shows_each_studys_selection_without_uids(tmp_path: Path) -> None:
    """`radflow inspect DELIVERY`: per study, every series kept or dropped with its rule, and
    the objects; a SEG is an object, not an image series block."""
    ct_series(tmp_path, "s", "thin", 6, spacing_mm=1.25, number=3)
    ct_series(tmp_path, "s", "coronal", 12, spacing_mm=2.0, number=4, orientation=CORONAL)
    topogram(tmp_path, "s")
    real_object(tmp_path, "s", "liver.dcm", number=300)
    real_file(tmp_path, "one", "CT_small.dcm")
    d = inspect_path(tmp_path)
    assert [e["series_number"] for e in d["series"]] == [1, 1, 3, 4]  # images only
    assert d["skipped_files"] == 1  # the SEG
    first, second = sorted(d["studies"], key=lambda s: len(s["series"]), reverse=True)
    assert [(c["series_number"], c["role"], c["rule"]) for c in first["series"]] == [
        (3, "primary", ""),
        (4, "dropped", "orientation"),
        (1, "dropped", "localizer"),
    ]
    assert first["objects"] == [
        {
            "series_number": 300,
            "modality": "SEG",
            "kind": "SEG",
            "sop_class": "Segmentation Storage",
            "instances": 1,
        }
    ]
    assert first["refused"] is None
    assert second["refused"] == {
        "reason": "too few slices for a 3-D volume: 1 (need 4)",
        "detail": "every image series dropped (CT 1: min_slices)",
    }
    text = format_inspection(d)
    assert "\n  #3     CT         6 slices   1.25 mm  axial     primary\n" in text
    assert "  #300   SEG        1 object            -         object: Segmentation Storage" in text
    assert "  refused    too few slices for a 3-D volume: 1 (need 4)" in text
    every_uid = {uid(f"series s {n}") for n in ("thin", "coronal", "topogram", "liver.dcm")}
    for u in every_uid | {uid("study s"), uid("study one")}:
        assert u not in text and u not in str(d)
