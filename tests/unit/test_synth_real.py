"""Synthetic studies like real ones (opt-in): topograms, coronal reformats, 5 mm recons, SEG and
RTSTRUCT annotations that are exactly the painted lesion, and soft-tissue lesions the demo's
threshold rule cannot find. Read back with pydicom, highdicom, SimpleITK and scikit-image; the
default output stays byte for byte what it was before any of this existed."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from skimage.draw import polygon2mask
from support.realdata import pydicom_file
from typer.testing import CliRunner

from radflow.cli import app
from radflow.dicom.deid import DeidConfig, Deidentifier
from radflow.errors import ConfigError, QuarantineError
from radflow.imaging.read import read_series
from radflow.imaging.roi import lesion_mask
from radflow.synth import CT_IMAGE_STORAGE, SynthSpec, SynthStudy, realistic, synthesize

SMALL = SynthSpec(studies=4, rows=48, columns=48, slices=12)
EVERYTHING = replace(
    SMALL,
    localizers=1.0,
    reformats=1.0,
    thick_recons=1.0,
    annotations=("seg", "rtstruct"),
    soft_tissue_lesions=0.5,
)
# sha256 over (relative path, file sha256) of every file written, computed on main at
# fe0b41e before the opt-in series existed: the defaults must keep writing exactly this.
BEFORE = [
    (
        SynthSpec(studies=3, rows=24, columns=20, slices=8),
        "06cc9ad12bb27f36b45927955d7a07308f4a8de4ebb778818693f3847c74f58b",
    ),
    (
        SynthSpec(
            studies=2,
            seed=7,
            rows=16,
            columns=18,
            slices=9,
            pixel_spacing=0.7,
            slice_thickness=2.5,
        ),
        "fec8ce60877ecff0f7e2fe89023ed7c53c5881c60c02da44368742ced0be1e89",
    ),
    (  # the demo's geometry
        SynthSpec(studies=3),
        "cde0360f96e702403ba492d64d08b10d85a9191d145ff915566642d8635706e8",
    ),
]


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@pytest.mark.parametrize(("spec", "digest"), BEFORE)
def test_default_output_is_byte_for_byte_what_it_was(
    spec: SynthSpec, digest: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    synthesize(inbox, inbox / "labels.csv", spec)
    assert _digest(inbox) == digest
    assert not (inbox / "truth.csv").exists()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SynthStudy]]:
    root = tmp_path_factory.mktemp("real")
    studies = synthesize(root / "inbox", root / "inbox" / "labels.csv", EVERYTHING)
    # The fixture covers every case the tests below rely on.
    assert {s.annotation for s in studies} == {"seg", "rtstruct"}
    assert {s.lesion for s in studies} == {"soft", "bright"}
    return root / "inbox", studies


def _files(study: SynthStudy, kind: str) -> list[Path]:
    uid = study.series_uids[study.kinds.index(kind)]
    return sorted(
        p
        for p in study.files
        if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == uid
    )


def _primary(study: SynthStudy) -> list[pydicom.Dataset]:
    """The primary axial series, sorted by z (the synth writes it bottom to top)."""
    return [pydicom.dcmread(p) for p in _files(study, "axial")]


def _volume(study: SynthStudy) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in _files(study, "axial")])
    return reader.Execute()


def test_series_kinds_numbers_and_truth_csv(made: tuple[Path, list[SynthStudy]]) -> None:
    inbox, studies = made
    with open(inbox / "truth.csv", newline="") as f:
        rows = {r["study_uid"]: r for r in csv.DictReader(f)}
    for study in studies:
        assert study.kinds[0] == "axial" and study.kinds[-4:-1] == ("thick", "coronal", "localizer")
        assert len(study.series_uids) == len(study.kinds) == len(set(study.series_uids))
        assert study.truth is not None and study.truth.voxels > 50
        assert study.truth.mask().sum() == study.truth.voxels
        row = rows[study.study_uid]
        assert row == {
            "study_uid": study.study_uid, "label": str(study.label), "lesion": study.lesion,
            "lesion_voxels": str(study.truth.voxels), "annotation": study.annotation,
            "series": ";".join(study.kinds),
        }  # fmt: skip
        for path in study.files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.StudyInstanceUID == study.study_uid
            assert ds.SeriesInstanceUID == study.series_uids[study.kinds.index(_kind(ds))]
            assert path.parent.name == f"S{ds.SeriesNumber}"
    # No PHI in the truth file: only UIDs the labels file already holds, counts and words.
    text = (inbox / "truth.csv").read_text()
    assert "MRN" not in text and "^" not in text


def _kind(ds: pydicom.Dataset) -> str:
    if ds.Modality == "SEG":
        return "seg"
    if ds.Modality == "RTSTRUCT":
        return "rtstruct"
    image_type = list(ds.ImageType)
    if "LOCALIZER" in image_type:
        return "localizer"
    if "REFORMATTED" in image_type:
        return "coronal"
    if float(ds.SliceThickness) == 5:
        return "thick"
    return "post-contrast" if ds.SeriesNumber == 2 else "axial"


def test_localizer_is_one_projection_image(made: tuple[Path, list[SynthStudy]]) -> None:
    _, studies = made
    for study in studies:
        (path,) = _files(study, "localizer")
        ds = pydicom.dcmread(path)
        primary = _primary(study)
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        assert ds.SOPClassUID == CT_IMAGE_STORAGE and ds.Modality == "CT"
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]
        assert ds.FrameOfReferenceUID == primary[0].FrameOfReferenceUID
        assert (ds.Rows, ds.Columns) == (SMALL.slices, SMALL.columns)
        assert "SliceThickness" not in ds
        # A projection: each pixel is the mean HU through the patient along y.
        hu = np.stack([p.pixel_array.astype(float) - 1024 for p in primary])
        expected = np.rint(hu.mean(axis=1)[::-1])
        assert np.abs(ds.pixel_array.astype(float) - 1024 - expected).max() <= 1


def test_coronal_reformat_is_derived_and_has_more_images(
    made: tuple[Path, list[SynthStudy]],
) -> None:
    _, studies = made
    for study in studies:
        paths = _files(study, "coronal")
        primary = _primary(study)
        assert len(paths) == SMALL.rows > len(primary) == SMALL.slices
        axial = np.stack([p.pixel_array for p in primary])  # (z, y, x)
        for j, path in enumerate(paths):
            ds = pydicom.dcmread(path)
            assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "REFORMATTED"]
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]
            assert ds.FrameOfReferenceUID == primary[0].FrameOfReferenceUID
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            assert x == float(primary[0].ImagePositionPatient[0])
            assert y == pytest.approx(float(primary[0].ImagePositionPatient[1]) + j * 0.9)
            assert z == float(primary[-1].ImagePositionPatient[2])  # the top row is the top slice
            # With one plane per primary row, the reformat is the primary's pixels re-sliced.
            assert np.array_equal(ds.pixel_array, axial[::-1, j, :])
    # radflow's reader sees a coronal volume (slice normal +y) in the primary's space:
    # resampled onto the primary's grid it is the primary, voxel for voxel.
    image = read_series(_files(studies[0], "coronal"))
    assert image.GetSize() == (SMALL.columns, SMALL.slices, SMALL.rows)
    np.testing.assert_allclose(image.GetDirection(), [1, 0, 0, 0, 0, 1, 0, -1, 0], atol=1e-9)
    primary = read_series(_files(studies[0], "axial"))
    back = sitk.Resample(image, primary, sitk.Transform(), sitk.sitkNearestNeighbor, -2000.0)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(primary))


def test_thick_recon_is_five_mm_axial(made: tuple[Path, list[SynthStudy]]) -> None:
    _, studies = made
    for study in studies:
        paths = _files(study, "thick")
        primary = _primary(study)
        # 12 slices 2 mm apart span 22 mm: five 5 mm slabs, centred like the primary.
        assert len(paths) == 5
        slabs = [pydicom.dcmread(p) for p in paths]
        zs = [float(s.ImagePositionPatient[2]) for s in slabs]
        assert zs == [-10, -5, 0, 5, 10]
        for s in slabs:
            assert float(s.SliceThickness) == float(s.SpacingBetweenSlices) == 5.0
            assert list(s.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
            assert s.ImagePositionPatient[:2] == primary[0].ImagePositionPatient[:2]
        # The slab at 0 mm covers [-2.5, 2.5]: 0.5, 2, 2 and 0.5 mm of the slices at -3..3 mm;
        # both are rounded to whole HU once, so they differ by at most 1.
        hu = np.stack([p.pixel_array.astype(float) for p in primary])
        expected = np.tensordot([0.1, 0.4, 0.4, 0.1], hu[4:8], axes=1)
        assert np.abs(slabs[2].pixel_array - expected).max() <= 1 + 1e-9
        image = read_series(paths)
        assert image.GetSize() == (SMALL.columns, SMALL.rows, 5)
        np.testing.assert_allclose(image.GetSpacing(), (0.9, 0.9, 5.0))
        np.testing.assert_allclose(image.GetOrigin(), (-21.15, -21.15, -10.0))


def test_seg_is_the_lesion_on_the_primary_grid(made: tuple[Path, list[SynthStudy]]) -> None:
    inbox, studies = made
    for study in (s for s in studies if s.annotation == "seg"):
        assert study.truth is not None
        (path,) = _files(study, "seg")
        seg = hd.seg.segread(path)
        primary = _primary(study)
        assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
        assert seg.StudyInstanceUID == study.study_uid
        assert seg.FrameOfReferenceUID == primary[0].FrameOfReferenceUID
        (segment,) = seg.SegmentSequence
        assert segment.SegmentLabel == "Lesion" and segment.SegmentAlgorithmType == "MANUAL"
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        kind = segment.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", "49755003")
        assert (kind.CodingSchemeDesignator, kind.CodeValue) == ("SCT", codes.SCT.Lesion.value)
        (series,) = seg.ReferencedSeriesSequence
        assert series.SeriesInstanceUID == study.series_uids[0]
        sops = [p.SOPInstanceUID for p in primary]
        assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} <= set(sops)
        # One frame per lesion slice, each exactly at the position of the slice it derives from.
        truth = study.truth.mask()
        lesion_slices = [k for k in range(SMALL.slices) if truth[k].any()]
        on: list[int] = []
        for frame in seg.PerFrameFunctionalGroupsSequence:
            source = frame.DerivationImageSequence[0].SourceImageSequence[0]
            k = sops.index(source.ReferencedSOPInstanceUID)
            position = frame.PlanePositionSequence[0].ImagePositionPatient
            assert [float(v) for v in position] == [
                float(v) for v in primary[k].ImagePositionPatient
            ]
            on.append(k)
        assert sorted(on) == lesion_slices
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=sops,
            segment_numbers=[1],
            assert_missing_frames_are_empty=True,
        )[..., 0]
        assert pixels.shape == truth.shape
        assert np.array_equal(pixels.astype(bool), truth)
        assert int(pixels.sum()) == study.truth.voxels
        assert "lesion_voxels" in (inbox / "truth.csv").read_text()


def test_rtstruct_contours_rasterise_to_the_lesion(made: tuple[Path, list[SynthStudy]]) -> None:
    _, studies = made
    for study in (s for s in studies if s.annotation == "rtstruct"):
        assert study.truth is not None
        (path,) = _files(study, "rtstruct")
        ds = pydicom.dcmread(path)
        primary = _primary(study)
        sops = [p.SOPInstanceUID for p in primary]
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.Modality == "RTSTRUCT"
        assert ds.StudyInstanceUID == study.study_uid
        (frame,) = ds.ReferencedFrameOfReferenceSequence
        assert frame.FrameOfReferenceUID == primary[0].FrameOfReferenceUID
        (ref_study,) = frame.RTReferencedStudySequence
        assert ref_study.ReferencedSOPInstanceUID == study.study_uid
        (ref_series,) = ref_study.RTReferencedSeriesSequence
        assert ref_series.SeriesInstanceUID == study.series_uids[0]
        assert [i.ReferencedSOPInstanceUID for i in ref_series.ContourImageSequence] == sops
        (roi,) = ds.StructureSetROISequence
        assert roi.ROIName == "Lesion" and roi.ROINumber == 1
        assert roi.ReferencedFrameOfReferenceUID == frame.FrameOfReferenceUID
        (outline,) = ds.ROIContourSequence
        assert outline.ReferencedROINumber == 1
        truth = study.truth.mask()
        lesion_slices = [k for k in range(SMALL.slices) if truth[k].any()]
        # Exactly one contour per lesion slice, on that slice's exact z.
        contours = list(outline.ContourSequence)
        assert len(contours) == len(lesion_slices)
        drawn = np.zeros_like(truth)
        x0, y0 = (float(v) for v in primary[0].ImagePositionPatient[:2])
        for contour in contours:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            k = sops.index(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)
            points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints
            assert set(points[:, 2]) == {float(primary[k].ImagePositionPatient[2])}
            # An independent rasteriser (voxel centres inside the polygon) gives the truth.
            rows_cols = np.stack([(points[:, 1] - y0) / 0.9, (points[:, 0] - x0) / 0.9], axis=1)
            drawn[k] = polygon2mask(truth.shape[1:], rows_cols)
        assert np.array_equal(drawn, truth)
        assert int(drawn.sum()) == study.truth.voxels


def _keywords(ds: pydicom.Dataset, prefix: str = "") -> set[str]:
    """Every attribute's keyword path, sequences walked (SEQ.ITEM_KEYWORD)."""
    out: set[str] = set()
    for element in ds:
        out.add(prefix + element.keyword)
        if element.VR == "SQ":
            for item in element.value:
                out |= _keywords(item, f"{prefix}{element.keyword}.")
    return out


def test_annotations_are_shaped_like_real_ones(made: tuple[Path, list[SynthStudy]]) -> None:
    """Every attribute that pydicom's real RTSTRUCT and pydicom-data's real SEG (liver.dcm)
    hold is in ours too, bar the optional ones named here."""
    _, studies = made
    optional = {
        "rtstruct": {
            "InstanceCreatorUID", "PatientPosition", "StructureSetROISequence.ROIDescription",
            "StructureSetROISequence.ROIVolume",
            "RTROIObservationsSequence.ROIObservationDescription",
            "RTROIObservationsSequence.ROIPhysicalPropertiesSequence",
            "RTROIObservationsSequence.ROIPhysicalPropertiesSequence.ROIPhysicalProperty",
            "RTROIObservationsSequence.ROIPhysicalPropertiesSequence.ROIPhysicalPropertyValue",
        },
        "seg": {
            "ClinicalTrialCoordinatingCenterName", "ClinicalTrialSeriesID",
            "ClinicalTrialTimePointID", "SegmentSequence.RecommendedDisplayCIELabValue",
            "SegmentSequence.SegmentAlgorithmName",
            # highdicom puts the one segment's identification in the shared groups
            "PerFrameFunctionalGroupsSequence.SegmentIdentificationSequence",
            "PerFrameFunctionalGroupsSequence.SegmentIdentificationSequence.ReferencedSegmentNumber",
        },
    }  # fmt: skip
    real = {
        "rtstruct": _keywords(pydicom.dcmread(pydicom_file("rtstruct.dcm"), force=True)),
        "seg": _keywords(pydicom.dcmread(pydicom_file("liver.dcm"))),
    }
    for study in studies:
        (path,) = _files(study, study.annotation)
        ours = _keywords(pydicom.dcmread(path))
        assert real[study.annotation] - optional[study.annotation] <= ours
    assert "SharedFunctionalGroupsSequence.SegmentIdentificationSequence" in _keywords(
        pydicom.dcmread(_files(next(s for s in studies if s.annotation == "seg"), "seg")[0])
    )


def test_soft_tissue_lesions_escape_the_threshold_rule(
    made: tuple[Path, list[SynthStudy]],
) -> None:
    _, studies = made
    for study in studies:
        assert study.truth is not None
        truth = study.truth.mask()
        image = _volume(study)
        hu = sitk.GetArrayFromImage(image)
        try:
            found = sitk.GetArrayFromImage(lesion_mask(image)).astype(bool)
            dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
        except QuarantineError:
            dice = 0.0
        if study.lesion == "bright":
            assert dice > 0.5
            continue
        assert truth.sum() > 50 and dice < 0.1
        assert 15 <= hu[truth].mean() <= 45
        # Inside soft tissue: every voxel next to the lesion is soft tissue, none is lung or air.
        near = sitk.GetArrayFromImage(
            sitk.BinaryDilate(sitk.GetImageFromArray(truth.astype(np.uint8)), [1, 1, 1])
        ).astype(bool)
        assert hu[near & ~truth].min() > -200


def test_annotations_still_resolve_after_deidentification(
    made: tuple[Path, list[SynthStudy]],
) -> None:
    """radflow's keyed UID map rewrites every UID the same way in every object, references
    inside the SEG and RTSTRUCT included; their PHI goes as the images' does."""
    _, studies = made
    deid = Deidentifier(DeidConfig(secret=b"synth-real test secret, 32 bytes!"))
    for study in studies:
        primary = _primary(study)
        for ds in primary:
            deid(ds)
        sops = [p.SOPInstanceUID for p in primary]
        assert not set(sops) & {p.SOPInstanceUID for p in _primary(study)}
        (path,) = _files(study, study.annotation)
        ann = pydicom.dcmread(path)
        # The annotation carries the same fake PHI as the images, free text included ...
        family, given, _ = str(ann.PatientName).split("^")
        phi = [family, given, ann.PatientID, ann.AccessionNumber, ann.PatientBirthDate]
        assert f"{family} {given}" in ann.SeriesDescription
        deid(ann)
        assert not [w for w in phi if w in str(ann)]  # ... and de-identification removes it
        assert ann.StudyInstanceUID == primary[0].StudyInstanceUID
        if study.annotation == "seg":
            (series,) = ann.ReferencedSeriesSequence
            refs = [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence]
            assert ann.FrameOfReferenceUID == primary[0].FrameOfReferenceUID
        else:
            frame = ann.ReferencedFrameOfReferenceSequence[0]
            assert frame.FrameOfReferenceUID == primary[0].FrameOfReferenceUID
            series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
            refs = [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence]
        assert series.SeriesInstanceUID == primary[0].SeriesInstanceUID
        assert refs and set(refs) <= set(sops)


def test_same_spec_same_bytes_and_realism_changes_the_uids(
    made: tuple[Path, list[SynthStudy]], tmp_path: Path
) -> None:
    inbox, studies = made
    again = synthesize(tmp_path / "a", tmp_path / "a" / "labels.csv", EVERYTHING)
    assert _digest(tmp_path / "a") == _digest(inbox)
    assert [s.kinds for s in again] == [s.kinds for s in studies]
    plain = synthesize(tmp_path / "b", tmp_path / "b" / "labels.csv", replace(SMALL, studies=2))
    assert not {s.study_uid for s in plain} & {s.study_uid for s in studies}
    # Study i does not depend on how many studies are made.
    fewer = synthesize(
        tmp_path / "c", tmp_path / "c" / "labels.csv", replace(EVERYTHING, studies=2)
    )
    assert [(s.study_uid, s.kinds, s.lesion) for s in fewer] == [
        (s.study_uid, s.kinds, s.lesion) for s in studies[:2]
    ]


def test_realistic_mix_and_fractions(tmp_path: Path) -> None:
    mix = realistic(SynthSpec(studies=20, rows=16, columns=16, slices=8))
    assert (mix.localizers, mix.reformats, mix.thick_recons) == (1.0, 0.5, 0.5)
    assert (mix.annotations, mix.annotated, mix.soft_tissue_lesions) == (
        ("seg", "rtstruct"), 0.8, 0.5,
    )  # fmt: skip
    studies = synthesize(tmp_path / "in", tmp_path / "in" / "labels.csv", mix)
    count = {k: sum(k in s.kinds for s in studies) for k in ("localizer", "coronal", "thick")}
    assert count["localizer"] == 20 and 4 <= count["coronal"] <= 16 and 4 <= count["thick"] <= 16
    annotated = [s.annotation for s in studies if s.annotation]
    assert 10 <= len(annotated) < 20 and {"seg", "rtstruct"} == set(annotated)
    assert 4 <= sum(s.lesion == "soft" for s in studies) <= 16


@pytest.mark.parametrize(
    "bad",
    [{"localizers": 1.5}, {"soft_tissue_lesions": -0.1}, {"annotations": ("seg", "nifti")}],
)
def test_bad_realism_is_a_config_error(bad: dict[str, object], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        synthesize(tmp_path / "in", tmp_path / "labels.csv", replace(SMALL, **bad))  # type: ignore[arg-type]
    assert not (tmp_path / "in").exists()


def test_cli_realistic_and_finer_options(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["synth", str(out), "--studies", "2", "--size", "24x24x8", "--realistic"]
    result = runner.invoke(app, [*args, "--reformats", "0", "--annotations", "rtstruct"])
    assert result.exit_code == 0, result.output
    with open(out / "truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert all("localizer" in r["series"] and "coronal" not in r["series"] for r in rows)
    assert {r["annotation"] for r in rows} <= {"rtstruct", ""}
    bad = runner.invoke(app, ["synth", str(tmp_path / "x"), "--annotations", "seg,nifti"])
    assert bad.exit_code == 2 and "synth.annotations" in bad.output
    assert "Traceback" not in bad.output
    help_text = runner.invoke(app, ["synth", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--realistic", "--localizers", "--reformats", "--thick-recons"):
        assert option in help_text
    assert "--annotations" in help_text and "--soft-tissue-lesions" in help_text


def test_rtstruct_is_exact_on_ragged_shapes(
    made: tuple[Path, list[SynthStudy]], tmp_path: Path
) -> None:
    """Ragged blobs with islands and pinholes, tidied to one simple region per slice, come
    back exactly from their contours (one per slice) through an independent rasteriser."""
    from scipy import ndimage

    from radflow.synth_annotations import AnnotationHeader, write_rtstruct
    from radflow.synth_series import tidy_lesion

    _, studies = made
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in _files(studies[0], "axial")]
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.standard_normal((SMALL.slices, 48, 48)), (0, 1.2, 1.2))
    ragged = noise > 0.05
    tidy = tidy_lesion(ragged)
    holed = False
    for before, plane in zip(ragged, tidy, strict=True):
        pieces, count = ndimage.label(before)  # 4-connected
        largest = pieces == 1 + np.argmax(np.bincount(pieces.ravel())[1:])
        # One 4-connected piece without holes: the largest one, filled.
        assert count > 1 and ndimage.label(plane)[1] == 1
        assert np.array_equal(plane, ndimage.binary_fill_holes(largest))
        holed |= bool((plane != largest).any())
    assert holed
    # No diagonal-only touch is left (a 4-connected piece touching itself at a corner encloses
    # a 4-connected hole, which is filled), so each contour is a simple polygon.
    a, b, c, d = tidy[:, :-1, :-1], tidy[:, :-1, 1:], tidy[:, 1:, :-1], tidy[:, 1:, 1:]
    assert ((a & d & ~b & ~c) | (b & c & ~a & ~d)).sum() == 0
    head = AnnotationHeader(
        "2.25.1", "2.25.2", "2.25.3", 7, "RTSTRUCT", "READER^A", "20200101", "120000"
    )
    ds = pydicom.dcmread(write_rtstruct(tmp_path / "rt.dcm", sources, tidy, head))
    drawn = np.zeros_like(tidy)
    x0, y0 = (float(v) for v in sources[0].ImagePositionPatient[:2])
    for contour in ds.ROIContourSequence[0].ContourSequence:
        k = [s.SOPInstanceUID for s in sources].index(
            contour.ContourImageSequence[0].ReferencedSOPInstanceUID
        )
        points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
        rows_cols = np.stack([(points[:, 1] - y0) / 0.9, (points[:, 0] - x0) / 0.9], axis=1)
        drawn[k] = polygon2mask(tidy.shape[1:], rows_cols)
    assert len(ds.ROIContourSequence[0].ContourSequence) == SMALL.slices
    assert np.array_equal(drawn, tidy)
