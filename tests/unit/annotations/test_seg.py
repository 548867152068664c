"""DICOM SEG onto a series' grid: a real SEG (pydicom-data's liver.dcm, written by dcmqi)
and SEGs highdicom writes from known masks, read back voxel for voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from support.annotations import CTSeries, liver_ct, liver_seg, write_ct_series, write_seg

from radflow.annotations import annotation_kind, segments_on_grid
from radflow.errors import QuarantineError
from radflow.imaging.read import read_series


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory) -> tuple[CTSeries, sitk.Image]:
    ct = liver_ct(tmp_path_factory.mktemp("liver"))
    return ct, read_series(list(ct.files))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[CTSeries, sitk.Image]:
    """8 axial slices 2.5 mm apart, 32 x 40 pixels of 0.7 x 0.8 mm, off-centre origin."""
    ct = write_ct_series(
        tmp_path_factory.mktemp("small"),
        rows=32,
        columns=40,
        pixel_spacing=(0.7, 0.8),
        positions=[(-10.0, -20.0, 2.5 * k - 3.0) for k in range(8)],
    )
    return ct, read_series(list(ct.files))


def _labels() -> np.ndarray:
    """Two segments on known voxels, (z, y, x); slices 0, 1, 5, 6, 7 empty."""
    labels = np.zeros((8, 32, 40), np.uint8)
    labels[2:5, 5:12, 7:20] = 1  # 3 x 7 x 13 = 273 voxels
    labels[3, 20:25, 30:33] = 2  # 15 voxels
    labels[4, 0, 0] = 2  # a corner voxel: axes and origin exactly right
    return labels


def test_liver_seg_lands_on_its_ct_voxel_for_voxel(liver: tuple[CTSeries, sitk.Image]) -> None:
    _, reference = liver
    (segment,) = segments_on_grid(liver_seg(), reference)
    assert (segment.number, segment.label, segment.code) == (1, "Liver", "SRT:T-62000")
    mask = sitk.GetArrayFromImage(segment.mask)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert segment.mask.GetSize() == reference.GetSize() == (512, 512, 3)
    assert segment.mask.GetOrigin() == reference.GetOrigin()
    # Independent of highdicom: pydicom's own unpacking of each frame, put on the slice
    # its Plane Position names (slices are 1 mm apart from z = -128.69).
    ds = pydicom.dcmread(liver_seg())
    frames = ds.pixel_array
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        k = round(z - reference.GetOrigin()[2])
        assert np.array_equal(mask[k], frames[i])
    assert [int(n) for n in mask.sum(axis=(1, 2))] == [36233, 35645, 35220]
    assert segment.voxels == 107098


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL", "LABELMAP"])
def test_a_seg_highdicom_writes_reads_back_exactly(
    small: tuple[CTSeries, sitk.Image], tmp_path: Path, kind: str
) -> None:
    ct, reference = small
    labels = _labels()
    path = write_seg(tmp_path / "seg.dcm", ct, labels, kind=kind)
    assert pydicom.dcmread(path).SegmentationType == kind
    assert annotation_kind(path) == "seg"
    segments = segments_on_grid(path, reference)
    assert [(s.number, s.label, s.code) for s in segments] == [
        (1, "segment 1", "SCT:108369006"),
        (2, "segment 2", "SCT:108369006"),
    ]
    for segment in segments:
        expected = (labels == segment.number).astype(np.uint8)
        assert np.array_equal(sitk.GetArrayFromImage(segment.mask), expected)
    assert [s.voxels for s in segments] == [273, 16]


def test_a_fractional_seg_is_the_voxels_of_at_least_one_half(
    small: tuple[CTSeries, sitk.Image], tmp_path: Path
) -> None:
    ct, reference = small
    fractions = np.zeros((8, 32, 40), np.float32)
    fractions[2, 3:6, 4:9] = 0.6  # 15 voxels in
    fractions[3, 3:6, 4:9] = 0.4  # 15 out
    fractions[4, 10, 10:14] = 1.0  # 4 in
    labels = (fractions > 0).astype(np.uint8)
    path = write_seg(
        tmp_path / "fractional.dcm", ct, labels, kind="FRACTIONAL", fractions=fractions
    )
    (segment,) = segments_on_grid(path, reference)
    assert np.array_equal(sitk.GetArrayFromImage(segment.mask), (fractions >= 0.5).astype(np.uint8))
    assert segment.voxels == 19


def test_a_single_frame_seg_lands_on_its_slice(
    small: tuple[CTSeries, sitk.Image], tmp_path: Path
) -> None:
    ct, reference = small
    labels = np.zeros((8, 32, 40), np.uint8)
    labels[6, 1:3, 1:4] = 1
    path = write_seg(tmp_path / "one.dcm", ct, labels)
    assert int(pydicom.dcmread(path).NumberOfFrames) == 1
    (segment,) = segments_on_grid(path, reference)
    assert np.array_equal(sitk.GetArrayFromImage(segment.mask), labels)


def test_frames_on_every_other_slice_stay_on_their_slices(
    small: tuple[CTSeries, sitk.Image], tmp_path: Path
) -> None:
    ct, reference = small
    labels = np.zeros((8, 32, 40), np.uint8)
    labels[1, 1:3, 1:4] = labels[3, 2:5, 1:4] = labels[5, 2:6, 1:4] = 1
    (segment,) = segments_on_grid(write_seg(tmp_path / "sparse.dcm", ct, labels), reference)
    assert np.array_equal(sitk.GetArrayFromImage(segment.mask), labels)


def test_a_seg_within_the_tolerance_is_snapped_to_the_grid(
    small: tuple[CTSeries, sitk.Image], tmp_path: Path
) -> None:
    ct, reference = small
    labels = _labels()
    path = write_seg(tmp_path / "seg.dcm", ct, labels)
    moved = sitk.Image(reference)
    x, y, z = reference.GetOrigin()
    moved.SetOrigin((x + 0.2, y - 0.2, z + 0.3))  # 0.41 mm: inside 0.5 mm
    segments = segments_on_grid(path, moved)
    assert np.array_equal(sitk.GetArrayFromImage(segments[0].mask), (labels == 1).astype(np.uint8))


@pytest.mark.parametrize(
    ("shift", "reason", "offset"),
    [
        ((0.0, 0.0, 1.2), "SEG frame is off the series' grid", "by 1.20 mm"),
        ((0.0, 0.0, 0.9), "SEG frame is off the series' grid", "by 0.90 mm"),
        ((0.8, 0.0, 0.0), "SEG is off the series' grid", "by 0.80 mm"),  # one whole column
        ((0.0, -1.4, 0.0), "SEG is off the series' grid", "by 1.40 mm"),  # two whole rows
    ],
)
def test_a_seg_off_the_grid_is_quarantined_with_its_offset(
    small: tuple[CTSeries, sitk.Image],
    tmp_path: Path,
    shift: tuple[float, float, float],
    reason: str,
    offset: str,
) -> None:
    ct, reference = small
    path = write_seg(tmp_path / "seg.dcm", ct, _labels())
    moved = sitk.Image(reference)
    moved.SetOrigin(tuple(o + s for o, s in zip(reference.GetOrigin(), shift, strict=True)))
    with pytest.raises(QuarantineError) as caught:
        segments_on_grid(path, moved)
    assert caught.value.reason == reason
    assert caught.value.detail == f"{offset} (tolerance 0.5 mm)"


def test_a_wider_tolerance_is_the_callers_choice(
    small: tuple[CTSeries, sitk.Image], tmp_path: Path
) -> None:
    ct, reference = small
    path = write_seg(tmp_path / "seg.dcm", ct, _labels())
    moved = sitk.Image(reference)
    x, y, z = reference.GetOrigin()
    moved.SetOrigin((x, y, z + 0.9))
    (first, _) = segments_on_grid(path, moved, tolerance_mm=1.0)
    assert first.voxels == 273
