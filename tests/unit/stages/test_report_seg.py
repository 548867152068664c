"""The report stage writes the ROI it scored as `seg.dcm` beside `sr.dcm`: a SEG highdicom
reads back, whose frames lie exactly on the primary series' instances (what a viewer's overlay
needs), holding the volume's mask carried onto the primary's native grid voxel for voxel, and
an SR whose volume measurement references that segment. A re-run writes the same bytes."""

from __future__ import annotations

import io
import shutil
from copy import deepcopy as copy_dataset
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from support.lakes import TrainedLake
from support.phi import phi_strings
from support.realdata import pydicom_file

from radflow.errors import QuarantineError
from radflow.imaging.grid import Grid, mask_on_grid
from radflow.imaging.read import read_series
from radflow.lake import Lake, SeriesEntry, StudyManifest
from radflow.lake.records import Geometry
from radflow.reports.seg import ROI_SEGMENT, SEG_SERIES_NUMBER
from radflow.stages.report import SEG_DICOM, SR_DICOM, primary_series, write_study_report
from radflow.stages.score import score_study
from radflow.store import LocalStore


@dataclass(frozen=True)
class Reported:
    lake: Lake
    score: str
    folder: Path  # the report's folder in the lake
    primary: dict[str, pydicom.Dataset]  # the primary series' instances by SOP Instance UID
    primary_uid: str
    other_series: set[str]  # the study's other series
    native_mask: sitk.Image  # the volume's mask on the primary's native grid
    phi: set[str]


@pytest.fixture(scope="module")
def reported(trained: TrainedLake, tmp_path_factory: pytest.TempPathFactory) -> Reported:
    """A study with two series on one grid (the primary and a moved copy), scored and reported
    by the stages."""
    tmp = tmp_path_factory.mktemp("seg")
    built = trained.copy(tmp)
    lake = built.lake
    pick = next(i for i, d in enumerate(built.deids) if len(lake.manifest(d).series) == 2)
    score = score_study(lake, built.rows[pick], built.model)
    html = write_study_report(lake, score)
    manifest = lake.manifest(built.deids[pick])
    volume = lake.score(score).volume
    # The volumes stage's primary, as its series selection names it (of two series on one
    # grid, the lower series number).
    selection = lake.qc(volume).selection
    assert selection is not None and selection.primary is not None
    primary_uid = selection.primary
    assert [c.series_number for c in selection.series] == [1, 2]
    files = lake.series_files(built.deids[pick], primary_uid, tmp / "primary")
    image = read_series(files)
    native = Grid.of(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return Reported(
        lake=lake,
        score=score,
        folder=built.root / html.rsplit("/", 1)[0],
        primary={(ds := pydicom.dcmread(f)).SOPInstanceUID: ds for f in files},
        primary_uid=primary_uid,
        other_series={s.series_uid for s in manifest.series} - {primary_uid},
        native_mask=mask_on_grid(lake.image(volume, "mask"), native),
        phi=phi_strings(built.studies),
    )


def test_seg_sits_beside_the_sr_in_a_new_series_of_the_study(reported: Reported) -> None:
    assert {SEG_DICOM, SR_DICOM} <= {p.name for p in reported.folder.iterdir()}
    seg = hd.seg.segread(reported.folder / SEG_DICOM)
    source = next(iter(reported.primary.values()))
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID not in {reported.primary_uid, *reported.other_series}
    assert seg.SeriesNumber == SEG_SERIES_NUMBER
    assert seg.SegmentationType == "BINARY"
    (segment,) = seg.SegmentSequence
    assert segment.SegmentNumber == ROI_SEGMENT
    assert segment.SegmentLabel == "ROI"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"  # the demo's rule
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Lesion.value
    text = (reported.folder / SEG_DICOM).read_bytes().decode("latin-1")
    assert not sorted(s for s in reported.phi if s in text), "PHI in the SEG"


def test_seg_frames_lie_on_the_primary_instances(reported: Reported) -> None:
    """The viewer-style overlay check: every frame names one primary instance and lies exactly
    where that instance lies (the same DS strings), with its orientation and pixel spacing."""
    seg = hd.seg.segread(reported.folder / SEG_DICOM)
    referenced = {
        i.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} == {reported.primary_uid}
    assert referenced == set(reported.primary)
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (derivation,) = frame.DerivationImageSequence
        (source_ref,) = derivation.SourceImageSequence
        source = reported.primary[source_ref.ReferencedSOPInstanceUID]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert [str(v) for v in position] == [str(v) for v in source.ImagePositionPatient]
        orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        assert [str(v) for v in orientation] == [str(v) for v in source.ImageOrientationPatient]
        spacing = shared.PixelMeasuresSequence[0].PixelSpacing
        assert [str(v) for v in spacing] == [str(v) for v in source.PixelSpacing]
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)


def test_seg_holds_the_native_mask_voxel_for_voxel(reported: Reported) -> None:
    seg = hd.seg.segread(reported.folder / SEG_DICOM)
    count = int(np.count_nonzero(sitk.GetArrayViewFromImage(reported.native_mask)))
    assert count > 0
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)  # one segment: a frame each
    assert int(np.count_nonzero(pixels)) == count
    # Frame by frame: the ROI on each instance's slice of the native grid.
    native = sitk.GetArrayFromImage(reported.native_mask)  # (slices, rows, columns)
    origin = np.array(reported.native_mask.GetOrigin())
    normal = np.array(reported.native_mask.GetDirection()).reshape(3, 3)[:, 2]
    dz = reported.native_mask.GetSpacing()[2]
    for n, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = round(float((position - origin) @ normal) / dz)
        np.testing.assert_array_equal(pixels[n], native[k])


def test_sr_measures_the_roi_volume_and_references_the_segment(reported: Reported) -> None:
    seg = pydicom.dcmread(reported.folder / SEG_DICOM)
    sr = hd.sr.srread(reported.folder / SR_DICOM)
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    (volume,) = group.get_measurements(name=codes.SCT.Volume)
    count = int(np.count_nonzero(sitk.GetArrayViewFromImage(reported.native_mask)))
    voxel_mm3 = float(np.prod(reported.native_mask.GetSpacing()))
    assert volume.value == pytest.approx(count * voxel_mm3, abs=1e-3)
    assert volume.unit == codes.UCUM.CubicMillimeter
    reference = group.referenced_segment
    assert reference is not None
    item = reference[0]  # the Referenced Segment content item (TID 1411)
    assert item.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert item.referenced_sop_class_uid == seg.SOPClassUID
    assert item.referenced_segment_numbers == [ROI_SEGMENT]
    # The score keeps its own group, and the SEG is evidence of the SR.
    assert len(sr.content.get_image_measurement_groups()) == 1
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) in {
        (series, sop) for _, series, sop, _ in sr.get_evidence()
    }


def test_a_rerun_writes_the_same_bytes(reported: Reported) -> None:
    before = {n: (reported.folder / n).read_bytes() for n in (SEG_DICOM, SR_DICOM)}
    shutil.rmtree(reported.folder)
    write_study_report(reported.lake, reported.score)
    after = {n: (reported.folder / n).read_bytes() for n in (SEG_DICOM, SR_DICOM)}
    assert after == before


def _put_series(lake: Lake, deid: str, datasets: list[pydicom.Dataset]) -> SeriesEntry:
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        lake.put_instance(deid, ds.SeriesInstanceUID, ds.SOPInstanceUID, buffer.getvalue())
    return SeriesEntry(
        series_uid=datasets[0].SeriesInstanceUID, modality="CT", instances=len(datasets)
    )


def test_primary_series_is_found_by_its_geometry(tmp_path: Path) -> None:
    """A real study (pydicom's 98892001): a 2-image localizer in two orientations, a copy of
    the axial CT moved 10 mm (as many instances, listed first) and the axial CT itself."""
    root = Path(pydicom_file("dicomdirtests/98892001/CT5N")).parent
    axial = [pydicom.dcmread(p) for p in sorted((root / "CT5N").iterdir())]
    localizer = [pydicom.dcmread(p) for p in sorted((root / "CT2N").iterdir())]
    moved = []
    for n, ds in enumerate(axial):
        copy = copy_dataset(ds)
        copy.SeriesInstanceUID = generate_uid(entropy_srcs=["moved"])
        copy.SOPInstanceUID = generate_uid(entropy_srcs=["moved", str(n)])
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        copy.ImagePositionPatient = [x, y, z + 10.0]
        moved.append(copy)
    lake, deid = Lake(LocalStore(tmp_path / "lake")), "deid/v2/0123"
    entries = [_put_series(lake, deid, s) for s in (localizer, moved, axial)]
    lake.put_manifest(
        deid,
        StudyManifest(study_id="S-1", study_uid="1.2.3", patient_id="RF-1", series=entries),
    )
    image = read_series(sorted((root / "CT5N").iterdir()))
    native = Geometry(
        size=list(image.GetSize()),
        spacing_mm=[round(s, 6) for s in image.GetSpacing()],
        origin_mm=[round(o, 4) for o in image.GetOrigin()],
        direction=[round(d, 6) for d in image.GetDirection()],
    )
    series_uid, grid, paths = primary_series(lake, deid, native, tmp_path / "work")
    assert series_uid == axial[0].SeriesInstanceUID
    assert grid.origin == image.GetOrigin() and grid.size == image.GetSize()
    assert sorted(pydicom.dcmread(p).SOPInstanceUID for p in paths) == sorted(
        ds.SOPInstanceUID for ds in axial
    )
    elsewhere = native.model_copy(update={"origin_mm": [0.0, 0.0, 0.0]})
    with pytest.raises(QuarantineError, match="primary series not found"):
        primary_series(lake, deid, elsewhere, tmp_path / "again")
