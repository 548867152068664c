"""The ROI a study was scored on, as a DICOM Segmentation (PS3.3 A.51) a viewer overlays on
the primary series: binary, one segment, on the source instances' own frames and referencing
them, in a new series of the de-identified study.

Frames come from the source instances themselves (highdicom copies each one's position and
orientation), so the overlay lies exactly where the images are; the mask is sampled onto each
source frame with nearest neighbour, which on a regular series is the native grid's own slice
(taken as it is). UIDs are name-based on the report's address and the dates are the report's,
so a re-run writes the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from radflow import __version__
from radflow.reports.dicom import dated, name_uid

SEG_SERIES_NUMBER = 9003
ROI_SEGMENT = 1  # the one segment: the region the study was scored on
# What the ROI is, for a viewer's legend (CID 7150 category, CID 7151 type).
ROI_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
ROI_TYPE = codes.SCT.Lesion

# Where an ROI came from -> how the standard names its making (Segment Algorithm Type, and an
# algorithm family from CID 7162). An annotation was drawn by a person and carried onto this
# grid by radflow: semi-automatic. Matched on the part before a ":" ("annotation:SEG").
_ALGORITHM: dict[str, tuple[hd.seg.SegmentAlgorithmTypeValues, Code]] = {
    "annotation": (hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, codes.cid7162.ManualProcessing),
    "model": (hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, codes.cid7162.ArtificialIntelligence),
    "rule": (hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, codes.cid7162.HistogramAnalysis),
}


@dataclass(frozen=True)
class _Plane:
    """One source frame's grid: where its first pixel lies, its axes and its size."""

    position: tuple[float, float, float]
    row: tuple[float, float, float]  # direction along a row (increasing column index)
    column: tuple[float, float, float]
    spacing: tuple[float, float]  # DICOM order: between rows, between columns
    size: tuple[int, int]  # rows, columns


def roi_seg(
    mask_on_native: sitk.Image,
    source_datasets: Sequence[Dataset],
    *,
    key: str,
    roi_source: str,
    content_date: str,
    series_number: int = SEG_SERIES_NUMBER,
) -> Dataset:
    """A binary SEG of `mask_on_native` (nonzero = ROI) on `source_datasets`' frames.

    `source_datasets` are the primary series' instances (headers suffice): single-frame
    images, or one multi-frame image. `key` (the report's address) names the new UIDs;
    `roi_source` ("annotation", "model" or "rule", optionally ":"-qualified) sets the segment's
    algorithm type and is recorded as the algorithm's parameter. Frames without ROI voxels are
    left out (highdicom keeps them all when the ROI is empty: a SEG needs a frame).
    """
    kind, family = _algorithm(roi_source)
    sources = list(source_datasets)  # highdicom sorts the frames along the normal
    segment = hd.seg.SegmentDescription(
        segment_number=ROI_SEGMENT,
        segment_label="ROI",
        segmented_property_category=ROI_CATEGORY,
        segmented_property_type=ROI_TYPE,
        algorithm_type=kind,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="radflow",
            family=family,
            version=__version__,
            parameters={"roi_source": roi_source},
        ),
        tracking_uid=name_uid(key, "seg-segment"),
        tracking_id="radflow ROI",
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frame_masks(mask_on_native, sources),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=name_uid(key, "seg-series"),
        series_number=series_number,
        sop_instance_uid=name_uid(key, "seg"),
        instance_number=1,
        manufacturer="radflow",
        manufacturer_model_name="radflow",
        software_versions=__version__,
        device_serial_number=__version__,
        # LO: at most 64 characters, so the source's kind and model, not its description.
        content_description=f"ROI the study was scored on ({roi_source.split(' ', 1)[0]})",
        content_label="ROI",
        series_description="radflow ROI (research use only)",
    )
    _name_dimensions(seg, name_uid(key, "seg-dimensions"))
    return dated(seg, content_date)


def _name_dimensions(seg: Dataset, uid: str) -> None:
    """highdicom draws a random Dimension Organization UID; a name-based one replaces it."""
    for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence):
        item.DimensionOrganizationUID = uid


def roi_volume_mm3(mask: sitk.Image) -> float:
    """The ROI's volume: its voxel count times one voxel's volume on `mask`'s grid."""
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return float(voxels * math.prod(mask.GetSpacing()))


def frame_masks(mask: sitk.Image, sources: Sequence[Dataset]) -> npt.NDArray[np.uint8]:
    """`mask` (nonzero = ROI) sampled onto every frame of `sources`, as (frames, rows, columns),
    in the frames' order: each single-frame dataset, or a multi-frame dataset's frames."""
    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    array = sitk.GetArrayFromImage(binary)  # (slices, rows, columns)
    frames = []
    for plane in (plane for ds in sources for plane in _planes(ds)):
        k = _slice_index(binary, plane)
        frames.append(array[k] if k is not None else _sampled(binary, plane))
    return np.stack(frames).astype(np.uint8)


def _slice_index(mask: sitk.Image, plane: _Plane) -> int | None:
    """The mask's slice that is this frame's grid (same axes, spacing and size, first pixel on
    a voxel centre), or None: then the frame is resampled. Taking the slice is what nearest
    neighbour gives there, without a resampling per frame (seconds on a 300-slice CT)."""
    columns, rows, depth = mask.GetSize()
    axes = np.array(mask.GetDirection()).reshape(3, 3)
    index = mask.TransformPhysicalPointToContinuousIndex(plane.position)
    k = round(index[2])
    on_grid = (
        (rows, columns) == plane.size
        and np.allclose(mask.GetSpacing()[:2], plane.spacing[::-1], rtol=0, atol=1e-6)
        and np.allclose(axes[:, 0], plane.row, rtol=0, atol=1e-4)
        and np.allclose(axes[:, 1], plane.column, rtol=0, atol=1e-4)
        and np.allclose([index[0], index[1], index[2] - k], 0.0, rtol=0, atol=1e-3)
        and 0 <= k < depth
    )
    return k if on_grid else None


def _algorithm(roi_source: str) -> tuple[hd.seg.SegmentAlgorithmTypeValues, Code]:
    kind = roi_source.split(":", 1)[0]
    if kind not in _ALGORITHM:
        raise ValueError(f"unknown ROI source {roi_source!r}: not one of {sorted(_ALGORITHM)}")
    return _ALGORITHM[kind]


def _planes(ds: Dataset) -> list[_Plane]:
    """Each frame's grid, from the image plane module or the enhanced functional groups.

    By hand: highdicom reads frame positions only from images it wraps whole, and these are
    headers read without their pixels."""
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or [Dataset()]

    def numbers(item: Dataset, sequence: str, keyword: str) -> list[float]:
        for source in (item, shared):
            if sequence in source and keyword in source[sequence][0]:
                return [float(v) for v in source[sequence][0][keyword].value]
        if keyword not in ds:
            raise ValueError(f"a source frame without {keyword}")
        return [float(v) for v in ds[keyword].value]

    planes = []
    for item in per_frame:
        p = numbers(item, "PlanePositionSequence", "ImagePositionPatient")
        o = numbers(item, "PlaneOrientationSequence", "ImageOrientationPatient")
        s = numbers(item, "PixelMeasuresSequence", "PixelSpacing")
        planes.append(
            _Plane(
                position=(p[0], p[1], p[2]),
                row=(o[0], o[1], o[2]),
                column=(o[3], o[4], o[5]),
                spacing=(s[0], s[1]),
                size=(int(ds.Rows), int(ds.Columns)),
            )
        )
    return planes


def _sampled(mask: sitk.Image, plane: _Plane) -> npt.NDArray[np.uint8]:
    """The mask on one frame (rows, columns), nearest neighbour; 0 outside the mask's grid."""
    normal = np.cross(plane.row, plane.column)
    frame = sitk.Image([plane.size[1], plane.size[0], 1], sitk.sitkUInt8)
    frame.SetOrigin(plane.position)
    frame.SetSpacing((plane.spacing[1], plane.spacing[0], 1.0))
    frame.SetDirection(tuple(np.column_stack([plane.row, plane.column, normal]).ravel()))
    on_frame = sitk.Resample(mask, frame, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return np.asarray(sitk.GetArrayFromImage(on_frame)[0], dtype=np.uint8)
