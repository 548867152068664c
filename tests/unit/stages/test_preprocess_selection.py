"""The preprocess stage on real studies with the extra series real studies carry: a
topogram, a SEG, an RTSTRUCT, a thick recon, a secondary that cannot be read. Each study goes
inbox -> fetch -> anonymize -> build_volume through a real Lake on a local folder store, as
the tasks run it (no Prefect); the pixels are pydicom's CT_small and MR_small."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless
from support.realstudies import (
    DICOMDIR_TESTS,
    copy_tree,
    ct_series,
    encapsulated_pdf,
    mosaic,
    real_file,
    real_object,
    topogram,
    uid,
)

from radflow.config import Settings, load_settings
from radflow.dicom.deid import pseudo_uid
from radflow.lake import Lake
from radflow.stages import preprocess, run_stage
from radflow.stages.anonymize import anonymize_study
from radflow.stages.fetch import fetch_delivery
from radflow.store import LocalStore, open_store

SECRET = "selection-secret-" + "0123456789abcdef" * 2
# Small volumes: 3 mm voxels, a 16-voxel crop.
SMALL = {"spacing_mm": (3.0, 3.0, 3.0), "shape": (16, 16, 16)}

#: The builders' lesion spans the whole of their few slices.
TOUCHES = "ROI touches the crop border: the lesion may extend beyond the crop"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RADFLOW_SECRET", SECRET)
    return load_settings(store_url=(tmp_path / "lake").as_uri(), preprocess=SMALL)


def _ingest(tmp_path: Path, inbox: Path, settings: Settings) -> tuple[Lake, str]:
    """The one study of `inbox`, fetched and de-identified into a lake: (lake, deid key)."""
    lake = Lake(LocalStore(tmp_path / "lake"))
    fetched = fetch_delivery(open_store(inbox.resolve().as_uri()), "", tmp_path / "cache")
    assert fetched.quarantined == []
    (ref,) = fetched.studies
    deid = anonymize_study(lake, tmp_path / "cache", ref, settings.deid_config(), tmp_path / "reid")
    return lake, deid


def _deid_series(name: str, study: str = "s") -> str:
    return pseudo_uid(SECRET.encode(), uid(f"series {study} {name}"))


def test_good_ct_with_topogram_seg_rtstruct_and_thick_recon_is_prepared(
    tmp_path: Path, settings: Settings
) -> None:
    inbox = tmp_path / "inbox"
    ct_series(inbox, "s", "thin", 8, spacing_mm=2.5, number=3)
    ct_series(inbox, "s", "thick", 5, spacing_mm=5.0, number=2)
    topogram(inbox, "s")
    real_object(inbox, "s", "liver.dcm", number=300)
    real_object(inbox, "s", "rtstruct.dcm", number=301)
    lake, deid = _ingest(tmp_path, inbox, settings)
    assert len(lake.manifest(deid).series) == 5  # objects are de-identified and kept

    volume = preprocess.build_volume(lake, deid, settings.preprocess)
    qc = lake.qc(volume)
    selection = qc.selection
    assert selection is not None
    assert [(c.series_number, c.frames, c.role, c.rule) for c in selection.series] == [
        (3, 8, "primary", ""),
        (2, 5, "secondary", ""),
        (1, 1, "dropped", "localizer"),
    ]
    assert [(o.kind, o.instances) for o in selection.objects] == [("RTSTRUCT", 1), ("SEG", 1)]
    assert selection.primary == _deid_series("thin")
    assert {o.series_uid for o in selection.objects} == {
        _deid_series("liver.dcm"),
        _deid_series("rtstruct.dcm"),
    }
    # The thin series is the volume: 8 slices 2.5 mm apart; the thick one is registered.
    assert qc.native.size == [128, 128, 8] and qc.native.spacing_mm[2] == pytest.approx(2.5)
    assert qc.series == 2 and [r.series for r in qc.registration] == [1]
    assert qc.modality == "CT"
    # The real SEG and RTSTRUCT annotate other patients' series: set aside, with the reason.
    assert qc.warnings == [
        "SEG annotation not used: annotation references another series:"
        " 1 of 1 referenced series are not the study's series",
        "RTSTRUCT annotation not used: annotation references another series:"
        " 1 of 1 referenced series are not the study's series",
        TOUCHES,
    ]
    assert qc.roi_source == "rule"
    assert lake.store.exists(f"{volume}/secondary_1.nii.gz")
    assert not lake.store.exists(f"{volume}/secondary_2.nii.gz")
    image = lake.image(volume, "image")
    assert image.GetSize() == (16, 16, 16) and image.GetPixelID() == sitk.sitkInt16
    # Default "auto" normalisation on CT is the HU window: the network input lies in [0, 1].
    values = sitk.GetArrayFromImage(lake.image(volume, "input"))
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert qc.preprocessing["steps"][-1]["step"] == "ByModality"


def _undecodable(ds: pydicom.Dataset) -> None:
    """RLE that no decoder can read: the pixels are noise."""
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([bytes(64)])
    ds["PixelData"].VR = "OB"


def _four_by_four(ds: pydicom.Dataset) -> None:
    """A 4 x 4 corner of the slice: readable, too small for ITK's registration pyramid."""
    corner = ds.pixel_array[:4, :4].copy()
    ds.Rows = ds.Columns = 4
    ds.PixelData = corner.tobytes()


@pytest.mark.parametrize(
    ("change", "why"),
    [(_undecodable, "undecodable pixel data"), (_four_by_four, "ITK could not register it")],
    ids=["undecodable", "itk-error"],
)
def test_a_secondary_that_cannot_be_registered_is_a_warning(
    tmp_path: Path, settings: Settings, change: Callable[[pydicom.Dataset], None], why: str
) -> None:
    inbox = tmp_path / "inbox"
    ct_series(inbox, "s", "thin", 6, spacing_mm=2.5, number=3)
    for path in ct_series(inbox, "s", "thick", 5, spacing_mm=5.0, number=2):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)
    lake, deid = _ingest(tmp_path, inbox, settings)
    volume = preprocess.build_volume(lake, deid, settings.preprocess)
    qc = lake.qc(volume)
    assert qc.warnings == [
        f"secondary series 2 (CT, 5 slices) not registered: {why}",
        TOUCHES,
    ]
    assert qc.series == 1 and qc.registration == []
    assert not lake.store.exists(f"{volume}/secondary_1.nii.gz")


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        (("CT_small.dcm", "liver.dcm"), "too few slices for a 3-D volume: 1 (need 4)"),
        (("eCT_Supplemental.dcm",), "too few slices for a 3-D volume: 2 (need 4)"),
        (("rtstruct.dcm", "liver.dcm"), "no image series: only RTSTRUCT, SEG"),
        (("topogram",), "localizer or scout (ImageType LOCALIZER): not a 3-D series"),
    ],
)
def test_a_study_without_a_usable_primary_is_quarantined_with_its_reason(
    tmp_path: Path, settings: Settings, files: tuple[str, ...], reason: str
) -> None:
    inbox = tmp_path / "inbox"
    for number, name in enumerate(files, start=1):
        if name == "topogram":
            topogram(inbox, "s")
        elif name in ("liver.dcm", "rtstruct.dcm"):
            real_object(inbox, "s", name, number=300 + number)
        else:
            real_file(inbox, "s", name)
    lake, deid = _ingest(tmp_path, inbox, settings)
    outcome = run_stage(preprocess, lake, settings, [deid, ""])
    assert outcome.key is None and outcome.quarantined is not None
    assert outcome.quarantined.reason == reason
    assert outcome.quarantined.error_class == "QuarantineError"


def test_mr_is_normalised_as_mr_and_warned_about_ct_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MR_small stacked into an ORIGINAL/PRIMARY series: z-score input, MR's own key image
    window, float storage, and a warning that the ROI rule thresholds in HU."""
    monkeypatch.setenv("RADFLOW_SECRET", SECRET)
    inbox = tmp_path / "inbox"
    ct_series(inbox, "s", "mr", 6, spacing_mm=3.0, source_file="MR_small.dcm")
    settings = load_settings(
        store_url=(tmp_path / "lake").as_uri(), preprocess={**SMALL, "roi_threshold_hu": 500.0}
    )
    lake, deid = _ingest(tmp_path, inbox, settings)
    volume = preprocess.build_volume(lake, deid, settings.preprocess)
    qc = lake.qc(volume)
    assert qc.modality == "MR"
    assert qc.warnings == ["ROI rule uses an HU threshold on MR"]
    assert lake.image(volume, "image").GetPixelID() == sitk.sitkFloat32
    # ZScore over the body of the crop: mean 0 and SD 1 there, values beyond [0, 1].
    normalised = sitk.GetArrayFromImage(lake.image(volume, "input"))
    assert normalised.min() < -0.5 and normalised.max() > 1.5

    # A CT-only setting set explicitly on MR is a warning too.
    explicit = load_settings(
        store_url=(tmp_path / "lake").as_uri(),
        preprocess={**SMALL, "roi_threshold_hu": 500.0, "normalize": "window"},
    )
    qc = lake.qc(preprocess.build_volume(lake, deid, explicit.preprocess))
    assert qc.warnings == [
        "normalize=window applies a CT (HU) window to MR",
        "ROI rule uses an HU threshold on MR",
    ]
    windowed = sitk.GetArrayFromImage(lake.image(preprocess.address(explicit, deid, ""), "input"))
    assert np.all((windowed >= 0) & (windowed <= 1))


def test_ct_only_settings_on_mr_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from radflow.config import PreprocessParams
    from radflow.imaging.pipelines import ct_only_warnings, normalisation

    auto = PreprocessParams()
    assert (normalisation(auto, "CT"), normalisation(auto, "MR")) == ("window", "zscore")
    assert normalisation(PreprocessParams(normalize="percentile"), "CT") == "percentile"
    assert ct_only_warnings(PreprocessParams(window_level=60.0, normalize="window"), "CT") == []
    assert ct_only_warnings(PreprocessParams(window_level=60.0), "MR") == [
        "window_level set (CT window): not used on MR"
    ]
    assert ct_only_warnings(PreprocessParams(window_width=350.0, window_level=50.0), "MR") == [
        "window_level and window_width set (CT window): not used on MR"
    ]
    # The rules are settings like any other: RADFLOW_PREPROCESS__SERIES__*.
    monkeypatch.setenv("RADFLOW_PREPROCESS__SERIES__MODALITIES", '["MR"]')
    monkeypatch.setenv("RADFLOW_PREPROCESS__SERIES__ALLOW_DERIVED", "true")
    rules = load_settings().preprocess.series
    assert rules.modalities == ("MR",) and rules.allow_derived and rules.min_slices == 4


def test_a_delivery_of_real_studies_gets_a_reason_for_every_study(
    tmp_path: Path, settings: Settings
) -> None:
    """pydicom's three dicomdirtests trees (CR, CT and MR studies, 6 in all), nibabel's
    MOSAIC pair and four single real files: 11 studies, none fails, each refusal has
    radflow's reason. 98892001's CT passes selection (its 2-image localizer dropped) and
    meets the demo's ROI rule, which finds nothing above 80 HU in its 16 x 16 slices."""
    inbox = tmp_path / "inbox"
    for tree in ("77654033", "98892001", "98892003"):
        copy_tree(DICOMDIR_TESTS / tree, inbox / tree)
    mosaic(inbox / "mosaic")
    for name in ("eCT_Supplemental.dcm", "emri_small.dcm", "MR_small.dcm", "693_J2KR.dcm"):
        real_file(inbox / "single", name, name)
    lake = Lake(LocalStore(tmp_path / "lake"))
    fetched = fetch_delivery(open_store(inbox.resolve().as_uri()), "", tmp_path / "cache")
    assert fetched.quarantined == [] and len(fetched.studies) == 11
    reasons: Counter[str] = Counter()
    for ref in fetched.studies:
        deid = anonymize_study(
            lake, tmp_path / "cache", ref, settings.deid_config(), tmp_path / "reid"
        )
        outcome = run_stage(preprocess, lake, settings, [deid, ""])
        assert outcome.quarantined is not None
        reasons[outcome.quarantined.reason] += 1
    assert reasons == {
        "too few slices for a 3-D volume: 1 (need 4)": 3,  # 693_J2KR, MR_small, 2 MR images
        "too few slices for a 3-D volume: 2 (need 4)": 1,  # enhanced CT, 2 frames
        "too few slices for a 3-D volume: 3 (need 4)": 1,  # MR, a 3-plane localizer
        "projection radiograph (CR/DX): not a 3-D series": 1,
        "missing slices": 1,  # 77654033's 4 CT slices, 202.5 mm apart
        "Siemens MOSAIC: not unpacked": 1,
        "missing geometry": 1,  # enhanced MR without functional groups
        "derived image (ImageType DERIVED\\SECONDARY), not ORIGINAL\\PRIMARY": 1,
        "no lesion found": 1,  # 98892001: selected, then the ROI rule
    }


def test_reports_dose_plans_captures_and_documents_are_kept_as_objects(
    tmp_path: Path, settings: Settings
) -> None:
    """pydicom's real SRs, RT dose and plan and a secondary capture, and an Encapsulated
    PDF (kept only when its text is checked), beside a good CT series: de-identified and
    kept, listed as objects, never read."""
    settings = load_settings(
        store_url=(tmp_path / "lake").as_uri(), preprocess=SMALL, deid={"documents": "check_text"}
    )
    inbox = tmp_path / "inbox"
    ct_series(inbox, "s", "axial", 6, spacing_mm=2.5)
    names = ("test-SR.dcm", "reportsi.dcm", "rtdose.dcm", "rtplan.dcm", "SC_rgb_rle.dcm")
    for number, name in enumerate(names, start=301):
        real_object(inbox, "s", name, number=number)
    encapsulated_pdf(inbox, "s")
    lake, deid = _ingest(tmp_path, inbox, settings)
    assert len(lake.manifest(deid).series) == 7
    qc = lake.qc(preprocess.build_volume(lake, deid, settings.preprocess))
    assert qc.selection is not None
    assert [(c.frames, c.role) for c in qc.selection.series] == [(6, "primary")]
    assert [(o.kind, o.series_number) for o in qc.selection.objects] == [
        ("DOC", 400),
        ("RT", 303),
        ("RT", 304),
        ("SC", 305),
        ("SR", 301),
        ("SR", 302),
    ]
    assert qc.series == 1 and qc.warnings == [TOUCHES]
