"""`roi_seg` on real CT series nobody here wrote (pydicom's dicomdirtests CT, pydicom-data's
enhanced CT): a SEG highdicom reads back, its frames exactly on the source frames, the ROI
voxel for voxel, the same bytes twice, and the ROI's source in the segment."""

from __future__ import annotations

import io
import random
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from support.realdata import pydicom_file

from radflow.imaging.grid import Grid, mask_on_grid
from radflow.imaging.read import plan_series
from radflow.reports.seg import ROI_SEGMENT, frame_masks, roi_seg, roi_volume_mm3

KEY = "reports/v4/0123abcd"
DATE = "20261123"


def _ct_series() -> list[Path]:
    """98892001's axial CT: 5 slices of 16 x 16, 0.488 mm pixels, 2.5 mm apart."""
    folder = pydicom_file("dicomdirtests/98892001/CT5N")
    return sorted(folder.iterdir())


def _grid(paths: list[Path]) -> Grid:
    plan = plan_series(paths)
    return Grid.of(plan.size, plan.spacing, plan.origin, plan.direction)


def _preprocessed_roi(native: Grid) -> sitk.Image:
    """A box ROI on a coarser, shifted grid, as the preprocess stage leaves `mask.nii.gz`."""
    coarse = sitk.Image([8, 8, 4], sitk.sitkUInt8)
    coarse.SetSpacing((1.0, 1.0, 2.0))
    coarse.SetOrigin(tuple(o + 0.3 for o in native.origin))
    coarse[2:6, 3:7, 1:3] = 1
    return coarse


def _saved(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_seg_of_a_real_ct_series_lies_on_its_slices() -> None:
    paths = _ct_series()
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    random.Random(7).shuffle(sources)  # the order the lake lists them in means nothing
    native = mask_on_grid(_preprocessed_roi(_grid(paths)), _grid(paths))
    count = int(np.count_nonzero(sitk.GetArrayViewFromImage(native)))
    assert count > 0
    ds = roi_seg(native, sources, key=KEY, roi_source="annotation:SEG", content_date=DATE)
    data = _saved(ds)
    assert data == _saved(
        roi_seg(native, sources, key=KEY, roi_source="annotation:SEG", content_date=DATE)
    )
    seg = hd.seg.segread(io.BytesIO(data))
    by_uid = {s.SOPInstanceUID: s for s in sources}
    # Every frame lies exactly on the instance it names, and they run along the normal.
    depths = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        source = by_uid[ref.ReferencedSOPInstanceUID]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert [str(v) for v in position] == [str(v) for v in source.ImagePositionPatient]
        depths.append(float(position[2]))
    assert depths in (sorted(depths), sorted(depths, reverse=True))
    # The ROI voxel for voxel: slices of the native grid, the ones without ROI left out.
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    assert int(np.count_nonzero(pixels)) == count
    on_grid = sitk.GetArrayFromImage(native)
    kept = [k for k in range(on_grid.shape[0]) if on_grid[k].any()]
    np.testing.assert_array_equal(pixels, on_grid[kept])
    referenced = {
        i.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert referenced == set(by_uid)
    # The segment says how it was made and from what.
    (segment,) = seg.SegmentSequence
    assert segment.SegmentNumber == ROI_SEGMENT
    assert segment.SegmentAlgorithmType == "SEMIAUTOMATIC"
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert algorithm.AlgorithmName == "radflow"
    assert "annotation:SEG" in algorithm.AlgorithmParameters
    assert seg.ContentDate == DATE and seg.InstanceCreationDate == DATE
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    other = roi_seg(native, sources, key="reports/v4/other", roi_source="rule", content_date=DATE)
    assert other.SOPInstanceUID != seg.SOPInstanceUID
    assert other.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_seg_of_an_enhanced_ct_uses_its_frames() -> None:
    """pydicom-data's Enhanced CT: one file of 2 frames, positions in functional groups."""
    path = pydicom_file("eCT_Supplemental.dcm")
    source = pydicom.dcmread(path, stop_before_pixels=True)
    grid = _grid([path])
    native = grid.image()
    native[100:140, 200:260, 0:2] = 1
    ds = roi_seg(native, [source], key=KEY, roi_source="model", content_date=DATE)
    seg = hd.seg.segread(io.BytesIO(_saved(ds)))
    assert seg.NumberOfFrames == 2
    for frame, source_frame in zip(
        seg.PerFrameFunctionalGroupsSequence, source.PerFrameFunctionalGroupsSequence, strict=True
    ):
        got = frame.PlanePositionSequence[0].ImagePositionPatient
        want = source_frame.PlanePositionSequence[0].ImagePositionPatient
        assert [str(v) for v in got] == [str(v) for v in want]
    assert int(np.count_nonzero(seg.pixel_array)) == 40 * 60 * 2


def test_unknown_roi_source_is_refused() -> None:
    paths = _ct_series()
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    native = _grid(paths).image()
    with pytest.raises(ValueError, match="unknown ROI source"):
        roi_seg(native, sources, key=KEY, roi_source="guess", content_date=DATE)


def test_roi_volume_is_voxels_times_voxel_volume() -> None:
    mask = sitk.Image([10, 10, 4], sitk.sitkUInt8)
    mask.SetSpacing((0.5, 0.25, 2.0))
    mask[0:3, 0:2, 1:3] = 1  # 12 voxels of 0.25 mm3
    mask[9, 9, 3] = 7  # any nonzero label is ROI
    assert roi_volume_mm3(mask) == pytest.approx(13 * 0.25, abs=1e-12)


def test_grids_match_within_the_tolerance_only() -> None:
    grid = Grid.of(
        [16, 16, 5], [0.488281, 0.488281, 2.5], [-72.2, -143.0, -1.2375], np.eye(3).ravel()
    )
    assert grid.matches(grid._replace(origin=(-72.2004, -143.0, -1.2375)))
    assert not grid.matches(grid._replace(origin=(-72.21, -143.0, -1.2375)))
    assert not grid.matches(grid._replace(size=(16, 16, 4)))
    assert not grid.matches(grid._replace(direction=(1.0, 0, 0, 0, 0, 1, 0, -1, 0)))


def test_frames_taken_from_the_grid_equal_frames_resampled() -> None:
    """A frame on a voxel-centre plane of the mask is its slice, taken as it is; a mask moved a
    hundredth of a voxel off the frames is resampled, by nearest neighbour: the same pixels."""
    paths = _ct_series()
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    native = mask_on_grid(_preprocessed_roi(_grid(paths)), _grid(paths))
    taken = frame_masks(native, sources)
    moved = sitk.Image(native)
    x, y, z = native.GetOrigin()
    moved.SetOrigin((x + 0.01 * native.GetSpacing()[0], y, z + 0.01 * native.GetSpacing()[2]))
    resampled = frame_masks(moved, sources)
    assert taken.shape == (5, 16, 16)
    assert int(np.count_nonzero(taken)) > 0
    np.testing.assert_array_equal(resampled, taken)
