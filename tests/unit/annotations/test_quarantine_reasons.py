"""Every reason `radflow.annotations` quarantines for, produced from a real or a broken
input, with its exact wording; and a check that the table misses no reason in the source.
No message may carry a UID or a path of the input (raw UIDs are PHI-adjacent)."""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from support.annotations import liver_ct, liver_seg, rtstruct_ct, rtstruct_file
from support.realdata import pyradiomics_case

import radflow.annotations as annotations
from radflow.annotations import (
    Segment,
    check_references,
    choose_segment,
    segments_on_grid,
)
from radflow.annotations.labelmap import write_deidentified_labelmap
from radflow.errors import QuarantineError
from radflow.imaging.read import read_series

Case = Callable[[Path], object]


class World:
    """The real inputs every case starts from, built once."""

    def __init__(self, root: Path) -> None:
        self.liver_ct = liver_ct(root / "liver")
        self.liver_ref = read_series(list(self.liver_ct.files))
        self.rt_ct = rtstruct_ct(root / "rt")
        self.rt_ref = read_series(list(self.rt_ct.files))
        image, label = pyradiomics_case("lung1")
        self.lung_ref = sitk.ReadImage(str(image))
        self.lung_label = sitk.ReadImage(str(label))
        self.uids = {
            self.liver_ct.series_uid,
            self.liver_ct.study_uid,
            *self.liver_ct.sop_uids,
            self.rt_ct.series_uid,
            self.rt_ct.study_uid,
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("world"))


def _seg(tmp: Path, edit: Callable[[Dataset], None]) -> Path:
    ds = pydicom.dcmread(liver_seg())
    edit(ds)
    ds.save_as(tmp / "seg.dcm")
    return tmp / "seg.dcm"


def _rt(tmp: Path, edit: Callable[[Dataset], None]) -> Path:
    ds = pydicom.dcmread(rtstruct_file(), force=True)
    edit(ds)
    ds.save_as(tmp / "rt.dcm")
    return tmp / "rt.dcm"


def _label(tmp: Path, image: sitk.Image, name: str = "label.nrrd") -> Path:
    sitk.WriteImage(image, str(tmp / name))
    return tmp / name


def _moved(image: sitk.Image, shift: tuple[float, float, float]) -> sitk.Image:
    out = sitk.Image(image)
    out.SetOrigin(tuple(o + s for o, s in zip(image.GetOrigin(), shift, strict=True)))
    return out


def _rotated_45(image: sitk.Image) -> sitk.Image:
    out = sitk.Image(image)
    c = s = np.sqrt(0.5)
    out.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return out


def _duplicate_position(ds: Dataset) -> None:
    frames = ds.PerFrameFunctionalGroupsSequence
    frames[1].PlanePositionSequence[0].ImagePositionPatient = copy.deepcopy(
        frames[0].PlanePositionSequence[0].ImagePositionPatient
    )


def _bad_vr_dicom(tmp: Path) -> Path:
    """A Part 10 file whose SOP Class UID has a VR pydicom cannot decode."""
    meta = b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"
    body = b"\x08\x00\x16\x00ZZ\x05\x00abcde"
    path = tmp / "bad.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + meta + body)
    return path


def _not_a_sequence(ds: Dataset) -> None:
    """ROI Contour Sequence as text, in explicit VR so that it reads back as text."""
    del ds.ROIContourSequence
    ds.add_new(0x30060039, "LO", "not a sequence")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def _contour_data(values: list[str]) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        ds.ROIContourSequence[0].ContourSequence[0].ContourData = values

    return edit


def _points_only(ds: Dataset) -> None:
    del ds.ROIContourSequence[0]


def _no_roi_number(ds: Dataset) -> None:
    del ds.ROIContourSequence[0].ReferencedROINumber


def _float_label(world: World) -> sitk.Image:
    return sitk.Cast(world.lung_label, sitk.sitkFloat32) * 0.5


def _segments() -> list[Segment]:
    mask = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    return [Segment(1, "Lesion", "SCT:108369006", mask), Segment(2, "lesion", None, mask)]


# reason, expected detail (a regex), and how to get there.
CASES: dict[str, tuple[str, str, Callable[[World, Path], object]]] = {
    "text file": (
        "not an annotation",
        r"neither DICOM SEG, RTSTRUCT nor a label map",
        lambda w, t: segments_on_grid(_label_text(t), w.liver_ref),
    ),
    "CT image": (
        "not an annotation",
        r"a DICOM object of another SOP class \(CT Image Storage\), not SEG or RTSTRUCT",
        lambda w, t: segments_on_grid(w.liver_ct.files[0], w.liver_ref),
    ),
    "no file": (
        "annotation file missing",
        r"no file at the given path",
        lambda w, t: segments_on_grid(t / "nothing.dcm", w.liver_ref),
    ),
    "undecodable DICOM": (
        "unreadable annotation",
        r"NotImplementedError",
        lambda w, t: segments_on_grid(_bad_vr_dicom(t), w.liver_ref),
    ),
    "SEG frame without a position": (
        "unreadable SEG",
        r"KeyError",
        lambda w, t: segments_on_grid(
            _seg(
                t, lambda d: delattr(d.PerFrameFunctionalGroupsSequence[1], "PlanePositionSequence")
            ),
            w.liver_ref,
        ),
    ),
    "SEG 0.4 mm off along each axis": (
        "SEG frame is off the series' grid",
        r"by 0\.69 mm \(tolerance 0\.5 mm\)",
        lambda w, t: segments_on_grid(liver_seg(), _moved(w.liver_ref, (0.4, 0.4, 0.4))),
    ),
    "SEG without segments": (
        "annotation has no segments",
        r"the SEG's Segment Sequence is empty",
        lambda w, t: segments_on_grid(
            _seg(t, lambda d: setattr(d, "SegmentSequence", [])), w.liver_ref
        ),
    ),
    "SEG with two frames at one position": (
        "SEG frames do not form a volume",
        r"RuntimeError",
        lambda w, t: segments_on_grid(_seg(t, _duplicate_position), w.liver_ref),
    ),
    "SEG on a narrower series": (
        "SEG is not on the series' grid",
        r"size 512 x 512 x 3 where the series has 511 x 512 x 3",
        lambda w, t: segments_on_grid(liver_seg(), w.liver_ref[1:, :, :]),
    ),
    "SEG one column off": (
        "SEG is off the series' grid",
        r"by 0\.81 mm \(tolerance 0\.5 mm\)",
        lambda w, t: segments_on_grid(liver_seg(), _moved(w.liver_ref, (0.810547, 0, 0))),
    ),
    "SEG on a rotated series": (
        "SEG is not aligned with the series' grid",
        r"axes differ by 45\.0 degrees",
        lambda w, t: segments_on_grid(liver_seg(), _rotated_45(w.liver_ref)),
    ),
    "SEG beyond the series' last slice": (
        "SEG extends beyond the series",
        r"35220 of 107098 voxels lie outside its volume",
        lambda w, t: segments_on_grid(liver_seg(), w.liver_ref[:, :, :2]),
    ),
    "RTSTRUCT 2 mm off the slices": (
        "RTSTRUCT contour is off the series' slices",
        r"by 2\.00 mm \(tolerance 0\.5 mm\)",
        lambda w, t: segments_on_grid(rtstruct_file(), _moved(w.rt_ref, (0, 0, 2.0))),
    ),
    "RTSTRUCT beyond the series": (
        "RTSTRUCT contour lies outside the series",
        r"20\.00 mm beyond its slices",
        lambda w, t: segments_on_grid(rtstruct_file(), _moved(w.rt_ref, (0, 0, 30.0))),
    ),
    "RTSTRUCT wider than the series": (
        "RTSTRUCT contour lies outside the series",
        r"44\.00 mm beyond its edge",  # x to ±200 mm; the edge at ±156 mm
        lambda w, t: segments_on_grid(rtstruct_file(), w.rt_ref[100:-100, :, :]),
    ),
    "RTSTRUCT contour of 4 numbers": (
        "malformed RTSTRUCT contour",
        r"Contour Data is not a list of x, y, z triplets",
        lambda w, t: segments_on_grid(_rt(t, _contour_data(["1", "2", "3", "4"])), w.rt_ref),
    ),
    "RTSTRUCT without an ROI number": (
        "malformed RTSTRUCT",
        r"ReferencedROINumber is missing or not a number",
        lambda w, t: segments_on_grid(_rt(t, _no_roi_number), w.rt_ref),
    ),
    "RTSTRUCT of points only": (
        "annotation has no segments",
        r"no ROI of the RTSTRUCT has a closed planar contour",
        lambda w, t: segments_on_grid(_rt(t, _points_only), w.rt_ref),
    ),
    "RTSTRUCT with a text where a sequence belongs": (
        "unreadable RTSTRUCT",
        r"AttributeError",
        lambda w, t: segments_on_grid(_rt(t, _not_a_sequence), w.rt_ref),
    ),
    "NRRD header without data": (
        "unreadable label map",
        r"SimpleITK could not read it",
        lambda w, t: segments_on_grid(_label_text(t, b"NRRD0004\ntype: short\n"), w.lung_ref),
    ),
    "2-D label map": (
        "label map is not a 3-D scalar image",
        r"2-D with 1 component\(s\)",
        lambda w, t: segments_on_grid(_label(t, w.lung_label[:, :, 0]), w.lung_ref),
    ),
    "label map of halves": (
        "label map holds non-integer values",
        r"labels must be whole numbers",
        lambda w, t: segments_on_grid(_label(t, _float_label(w)), w.lung_ref),
    ),
    "all-zero label map": (
        "annotation has no segments",
        r"the label map is all zero",
        lambda w, t: segments_on_grid(_label(t, w.lung_label * 0), w.lung_ref),
    ),
    "label map 2 mm off": (
        "label map is off the series' grid",
        r"by 2\.00 mm \(tolerance 0\.5 mm\)",
        lambda w, t: segments_on_grid(_label(t, _moved(w.lung_label, (2.0, 0, 0))), w.lung_ref),
    ),
    "label map one slice short": (
        "label map is not on the series' grid",
        r"size 512 x 512 x 47 where the series has 512 x 512 x 48",
        lambda w, t: segments_on_grid(_label(t, w.lung_label[:, :, 1:]), w.lung_ref),
    ),
    "SEG referencing another series": (
        "annotation references another series",
        r"1 of 1 referenced series are not the study's series",
        lambda w, t: check_references(liver_seg(), w.rt_ct.series_uid, set(w.liver_ct.sop_uids)),
    ),
    "SEG referencing no series": (
        "annotation references no series",
        r"no referenced series UID",
        lambda w, t: check_references(
            _seg(t, lambda d: delattr(d, "ReferencedSeriesSequence")), w.liver_ct.series_uid, set()
        ),
    ),
    "no segments to choose from": (
        "annotation has no segments",
        r"nothing to choose the ROI from",
        lambda w, t: choose_segment([]),
    ),
    "a label nobody has": (
        "no segment matches the ROI selection",
        r"label Liver; the annotation has 2 segment\(s\)",
        lambda w, t: choose_segment(_segments(), label="Liver"),
    ),
    "a masks CSV label the map lacks": (
        "label not in the label map",
        r"no voxel has label 9",
        lambda w, t: write_deidentified_labelmap(
            _label(t, _small_labels(1)), t / "clean.nii.gz", label=9
        ),
    ),
    "negative label values": (
        "label map values out of range",
        r"labels must be 0\.\.65535",
        lambda w, t: write_deidentified_labelmap(_label(t, _small_labels(-3)), t / "clean.nii.gz"),
    ),
    "a label two segments have": (
        "ROI selection matches several segments",
        r"label LESION matches 2; select by number",
        lambda w, t: choose_segment(_segments(), label="LESION"),
    ),
}


def _small_labels(value: int) -> sitk.Image:
    array = np.zeros((4, 4, 4), dtype=np.int16)
    array[1:3, 1:3, 1:3] = value
    return sitk.GetImageFromArray(array)


def _label_text(tmp: Path, data: bytes = b"just some text\n") -> Path:
    path = tmp / "notes.nrrd"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", CASES)
def test_each_reason_with_its_detail_and_no_uids(world: World, tmp_path: Path, case: str) -> None:
    reason, detail, run = CASES[case]
    with pytest.raises(QuarantineError) as caught:
        run(world, tmp_path)
    assert caught.value.reason == reason
    assert re.fullmatch(detail, caught.value.detail), caught.value.detail
    message = str(caught.value)
    assert not any(uid in message for uid in world.uids)
    assert str(tmp_path) not in message


def _reasons_in_source() -> list[str]:
    """The first argument of every QuarantineError(...) in radflow/annotations, as a regex."""
    root = Path(annotations.__file__).parent
    constants = {"ANOTHER_SERIES": re.escape("annotation references another series")}
    found = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "QuarantineError"
                and node.args
            ):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant):
                found.append(re.escape(str(arg.value)))
            elif isinstance(arg, ast.JoinedStr):
                found.append(
                    "".join(
                        re.escape(str(v.value)) if isinstance(v, ast.Constant) else ".+"
                        for v in arg.values
                    )
                )
            elif isinstance(arg, ast.Name):
                found.append(constants[arg.id])
    return found


def test_the_table_covers_every_reason_in_the_source() -> None:
    produced = {reason for reason, _, _ in CASES.values()}
    missing = [p for p in _reasons_in_source() if not any(re.fullmatch(p, r) for r in produced)]
    assert not missing
