"""Synthetic CT studies for the demo, the tests and the benchmarks.

Real scans cannot ship with the project, so this writes look-alike DICOM CT studies with
realistic PHI (in headers, free text and folder names) for de-identification to remove, an
optional second series moved by a known rigid transform for registration to undo, and a
lesion whose look depends on the label, so a model has something real to learn.

Everything is a pure function of the spec: UIDs are name-based (UUID v5 under 2.25), random
draws come from seeded generators and no clock is read, so the same spec gives byte-identical
files. Study i depends only on the seed, the geometry and i, not on how many studies are made.
"""

from __future__ import annotations

import csv
import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from radflow.errors import ConfigError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
AIR_HU = -1000.0
RESCALE_INTERCEPT = -1024

_FAMILY = ("DOE", "SMITH", "GARCIA", "NGUYEN", "MUELLER", "ROSSI", "KOWALSKI", "OKAFOR", "TANAKA")
_GIVEN = {"F": ("JANE", "MARIA", "AIKO", "FATIMA", "ELLEN"), "M": ("JOHN", "LUCA", "OMAR", "PIOTR")}
_PHYSICIANS = ("HOUSE^GREGORY", "GREY^MEREDITH", "KILDARE^JAMES", "QUINN^MICHAELA")
_OPERATORS = ("TECH^ANNA", "TECH^BORIS", "TECH^CHIDI")
_SITES = (
    ("ST. ELSEWHERE HOSPITAL", "159 WESTPHALL ST^^BOSTON^MA^02115^USA", "CT01"),
    ("COUNTY GENERAL", "1 COUNTY PLAZA^^CHICAGO^IL^60612^USA", "CTSCAN-EAST"),
    ("SACRED HEART MEDICAL", "42 SCRUBS AVE^^SAN DIEGO^CA^92101^USA", "SH-CT2"),
)

# Header values every slice shares; the rest is drawn per study, series and slice.
# fmt: off
_FIXED: dict[str, object] = {
    "SpecificCharacterSet": "ISO_IR 100", "SOPClassUID": CT_IMAGE_STORAGE, "Modality": "CT",
    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "Manufacturer": "RADFLOW SYNTH",
    "ManufacturerModelName": "PHANTOM-1", "BodyPartExamined": "CHEST", "PatientPosition": "HFS",
    "PositionReferenceIndicator": "", "KVP": "120",
    "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"], "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16, "BitsStored": 12,
    "HighBit": 11, "PixelRepresentation": 0, "RescaleIntercept": str(RESCALE_INTERCEPT),
    "RescaleSlope": "1", "RescaleType": "HU", "WindowCenter": "40", "WindowWidth": "400",
}
# fmt: on

Volume = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SynthSpec:
    studies: int = 40
    rows: int = 64
    columns: int = 64
    slices: int = 48
    pixel_spacing: float = 0.9  # mm, in-plane
    slice_thickness: float = 2.0  # mm, also the slice spacing
    seed: int = 0


@dataclass(frozen=True)
class SynthStudy:
    patient_id: str  # the ORIGINAL (PHI) patient id
    study_uid: str  # the ORIGINAL StudyInstanceUID
    label: int  # 0 or 1
    series_uids: tuple[str, ...]
    files: tuple[Path, ...]  # every file written for this study


@dataclass(frozen=True)
class _Patient:
    name: str  # DICOM PN, FAMILY^GIVEN^MIDDLE
    patient_id: str
    birth: dt.date
    sex: str


def synthesize(inbox: Path, labels_csv: Path, spec: SynthSpec = SynthSpec()) -> list[SynthStudy]:
    """Write `spec.studies` studies under `inbox` and their labels to `labels_csv`.

    Layout: `<PatientID>/<AccessionNumber>/S<SeriesNumber>/IM0001.dcm`. About one patient in
    five has two studies and one study in three has a second ("post-contrast") series, whose
    anatomy is the primary's moved by the rigid transform A described in its ImageComments
    (rotation about z through the volume centre, then translation): a point x of the primary
    is at A(x) in the second series, so registering fixed=primary, moving=second recovers A.
    """
    _check(spec)
    rng = np.random.default_rng(spec.seed)
    out: list[SynthStudy] = []
    label, taken = 0, set[str]()
    for p in range(spec.studies):  # patient p; stops once enough studies are written
        if len(out) == spec.studies:
            break
        patient = _new_patient(rng, taken)
        taken.add(patient.patient_id)
        date = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1800)))
        for visit in range(min(2 if p % 5 == 1 else 1, spec.studies - len(out))):
            if visit:
                date += dt.timedelta(days=int(rng.integers(30, 400)))
            i = len(out)
            label = int(rng.integers(0, 2)) if i % 2 == 0 else 1 - label  # balanced pairs
            out.append(_write_study(inbox, spec, rng, i, patient, date, label))
    labels_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(labels_csv, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["study_uid", "label"])
        writer.writerows(sorted((s.study_uid, s.label) for s in out))
    return out


def _check(spec: SynthSpec) -> None:
    """Refuse specs too small to hold a lesion with margin, before anything is written."""
    least = {"studies": 1, "rows": 16, "columns": 16, "slices": 8}
    for name, low in least.items():
        if (value := getattr(spec, name)) < low:
            raise ConfigError(f"synth.{name}", f"must be >= {low}, got {value}")
    for name in ("pixel_spacing", "slice_thickness"):
        if not 0.05 <= (mm := getattr(spec, name)) <= 20:
            raise ConfigError(f"synth.{name}", f"must be in [0.05, 20] mm, got {mm}")


def _uid(spec: SynthSpec, *parts: object) -> str:
    """A name-based 2.25 UID: deterministic, unique per (seed, geometry, parts)."""
    geometry = (spec.rows, spec.columns, spec.slices, spec.pixel_spacing, spec.slice_thickness)
    name = "/".join(str(p) for p in ("radflow-synth", spec.seed, *geometry, *parts))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _new_patient(rng: np.random.Generator, taken: set[str]) -> _Patient:
    sex = "F" if rng.random() < 0.5 else "M"
    name = f"{_pick(rng, _FAMILY)}^{_pick(rng, _GIVEN[sex])}^{_pick(rng, tuple('ABCKMRT'))}"
    patient_id = f"MRN{int(rng.integers(1_000_000, 10_000_000)):07d}"
    while patient_id in taken:
        patient_id = f"MRN{int(rng.integers(1_000_000, 10_000_000)):07d}"
    birth = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 65)))
    return _Patient(name, patient_id, birth, sex)


def _ds(x: float) -> str:
    """A DS string (at most 16 characters) that does not depend on float printing details."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _phantom(spec: SynthSpec, rng: np.random.Generator, label: int) -> Volume:
    """HU volume (z, y, x): air, a body with two lungs, and a label-dependent lesion.

    Physical coordinates are centred on the volume, so the lesion offset is in mm from the
    centre; every size scales with the smallest half-extent `h`, so the lesion (radius <=
    0.48 h, centre within 0.14 h of the centre) stays inside the body and the volume.
    """
    ps, t = spec.pixel_spacing, spec.slice_thickness
    hx, hy, hz = (spec.columns - 1) * ps / 2, (spec.rows - 1) * ps / 2, (spec.slices - 1) * t / 2
    z = (np.arange(spec.slices, dtype=np.float32) * t - hz)[:, None, None]
    y = (np.arange(spec.rows, dtype=np.float32) * ps - hy)[None, :, None]
    x = (np.arange(spec.columns, dtype=np.float32) * ps - hx)[None, None, :]

    def ellipsoid(cx: float, ax: float, ay: float, az: float) -> npt.NDArray[np.bool_]:
        inside: npt.NDArray[np.bool_] = ((x - cx) / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2 <= 1
        return inside

    vol = np.full((spec.slices, spec.rows, spec.columns), AIR_HU, dtype=np.float32)
    noise = rng.standard_normal(vol.shape, dtype=np.float32)
    body = ellipsoid(0, 0.9 * hx, 0.75 * hy, 1.5 * hz)
    vol[body] = rng.uniform(30, 50) + 10 * noise[body]
    for side, scale in ((-1, 1.0), (1, 0.85)):  # unequal lungs make rotations unambiguous
        lung = ellipsoid(side * 0.6 * hx, 0.22 * scale * hx, 0.42 * hy, 1.1 * hz)
        vol[lung] = -850 + 15 * noise[lung]
    del body, lung, noise

    h = min(hx, hy, hz)
    r0 = min(rng.uniform(6, 12), 0.4 * h)
    offset = np.where(rng.random(3) < 0.5, -1.0, 1.0) * rng.uniform(0.03, 0.08, 3) * h
    cz, cy, cx = (float(v) for v in offset)  # near, never at, the centre

    def around(c: float, half: float, step: float) -> slice:
        reach = 1.2 * r0 + step
        return slice(max(0, int((half + c - reach) // step)), int((half + c + reach) // step) + 2)

    kz, ky, kx = around(cz, hz, t), around(cy, hy, ps), around(cx, hx, ps)
    dz, dy, dx = z[kz] - cz, y[:, ky] - cy, x[:, :, kx] - cx
    box = vol[kz, ky, kx]  # a view: writing it paints the lesion
    if label == 0:  # smooth, slightly ellipsoidal, homogeneous
        ax, ay, az = r0 * rng.uniform(0.9, 1.1, 3)
        inside = (dx / ax) ** 2 + (dy / ay) ** 2 + (dz / az) ** 2 <= 1
        box[inside] = 110 + 5 * rng.standard_normal(int(inside.sum()), dtype=np.float32)
    else:  # lobulated boundary (radius within +-20 %), heterogeneous, calcified speckles
        dist = np.sqrt(dx**2 + dy**2 + dz**2)
        azimuth = np.arctan2(dy, dx)
        elevation = np.arcsin(np.clip(dz / np.maximum(dist, 1e-6), -1, 1))
        amp = rng.uniform(0.5, 1.0, 4)
        amp *= 0.2 / amp.sum()
        lobes = rng.integers(2, 6, 3)
        phase = rng.uniform(0, 2 * np.pi, 4)
        wobble = amp[3] * np.cos(2 * elevation + phase[3])
        for a, m, p in zip(amp[:3], lobes, phase[:3], strict=True):
            wobble = wobble + a * np.cos(m * azimuth + p) * np.cos(elevation)
        inside = dist <= r0 * (1 + wobble)
        n = int(inside.sum())
        values = 100 + 25 * rng.standard_normal(n, dtype=np.float32)
        values[rng.random(n) < 0.03] += 150
        box[inside] = values
    return vol


def _motion(rng: np.random.Generator) -> tuple[float, tuple[float, float, float]]:
    """A small rigid motion: rotation 2-5 degrees about z, translation of a few mm."""
    angle = float(rng.uniform(2, 5) * (1 if rng.random() < 0.5 else -1))
    shift = rng.uniform(-4, 4, 3) * np.array([1.0, 1.0, 0.5])
    return angle, (float(shift[0]), float(shift[1]), float(shift[2]))


def _moved(vol: Volume, spec: SynthSpec, angle: float, shift: tuple[float, float, float]) -> Volume:
    """`vol` with its anatomy moved by A = translate(shift) . rotate_z(angle) about the centre."""
    ps, t = spec.pixel_spacing, spec.slice_thickness
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((ps, ps, t))
    image.SetOrigin(
        ((1 - spec.columns) * ps / 2, (1 - spec.rows) * ps / 2, (1 - spec.slices) * t / 2)
    )
    forward = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, float(np.deg2rad(angle)), shift)
    # Resample pulls output point p from input point T(p); with T = A^-1 anatomy moves by A.
    out = sitk.Resample(image, forward.GetInverse(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    moved: Volume = sitk.GetArrayFromImage(out)
    return moved


def _write_study(
    inbox: Path,
    spec: SynthSpec,
    rng: np.random.Generator,
    index: int,
    patient: _Patient,
    date: dt.date,
    label: int,
) -> SynthStudy:
    """Draw one study's header values and volume(s), and write every slice."""
    accession = f"A{int(rng.integers(10**8, 10**9))}"
    site, address, station = _SITES[int(rng.integers(len(_SITES)))]
    start = dt.datetime.combine(date, dt.time(int(rng.integers(7, 19)), int(rng.integers(0, 60))))
    birthday_due = (date.month, date.day) < (patient.birth.month, patient.birth.day)
    age = date.year - patient.birth.year - birthday_due
    family, given, _ = patient.name.split("^")
    who = f"{family} {given} {patient.patient_id}"  # PHI in free text, as real scanners do
    study = Dataset()
    study.update(_FIXED)
    # fmt: off
    study.update({
        "StudyInstanceUID": _uid(spec, index, "study"), "FrameOfReferenceUID": _uid(spec, index),
        "PatientName": patient.name, "PatientID": patient.patient_id,
        "PatientBirthDate": f"{patient.birth:%Y%m%d}", "PatientSex": patient.sex,
        "PatientAge": f"{age:03d}Y", "AccessionNumber": accession,
        "StudyID": str(int(rng.integers(1000, 100000))), "StudyDate": f"{date:%Y%m%d}",
        "StudyTime": f"{start:%H%M%S}", "AcquisitionDate": f"{date:%Y%m%d}",
        "ContentDate": f"{date:%Y%m%d}", "InstitutionName": site, "InstitutionAddress": address,
        "StationName": station, "DeviceSerialNumber": f"SN{int(rng.integers(10**5, 10**6))}",
        "ReferringPhysicianName": _pick(rng, _PHYSICIANS),
        "PerformingPhysicianName": _pick(rng, _PHYSICIANS),
        "OperatorsName": _pick(rng, _OPERATORS), "StudyDescription": f"CT CHEST for {who}",
        "PixelSpacing": [_ds(spec.pixel_spacing)] * 2, "SliceThickness": _ds(spec.slice_thickness),
        "SpacingBetweenSlices": _ds(spec.slice_thickness), "Rows": spec.rows,
        "Columns": spec.columns,
    })
    # fmt: on
    vol = _phantom(spec, np.random.default_rng([spec.seed, index]), label)
    series = [(1, vol, "AXIAL SOFT TISSUE", f"Routine chest CT of {who}. No motion.")]
    if index % 3 == 1:
        angle, (tx, ty, tz) = _motion(rng)
        motion = f"motion rz={angle:+.3f}deg t=({tx:+.3f},{ty:+.3f},{tz:+.3f})mm"
        comment = f"Post-contrast CT of {who}. {motion}"
        series.append((2, _moved(vol, spec, angle, (tx, ty, tz)), "AXIAL POST CONTRAST", comment))
    series_uids: list[str] = []
    files: list[Path] = []
    for number, hu, description, comment in series:
        ds = Dataset()
        ds.update(study)
        ds.SeriesInstanceUID = _uid(spec, index, "series", number)
        ds.SeriesNumber = number
        ds.SeriesDescription = f"{description} {family} {given}"
        ds.ImageComments = comment
        ds.SeriesDate = study.StudyDate
        ds.SeriesTime = f"{start + dt.timedelta(minutes=4 * number):%H%M%S}"
        series_uids.append(ds.SeriesInstanceUID)
        folder = inbox / patient.patient_id / accession / f"S{number}"
        folder.mkdir(parents=True, exist_ok=True)
        stored = np.clip(np.rint(hu) - RESCALE_INTERCEPT, 0, 4095).astype(np.uint16)
        for k in range(spec.slices):
            files.append(_write_slice(folder, ds, spec, stored[k], k, _uid(spec, index, number, k)))
    return SynthStudy(
        patient.patient_id, study.StudyInstanceUID, label, tuple(series_uids), tuple(files)
    )


def _write_slice(
    folder: Path,
    ds: Dataset,
    spec: SynthSpec,
    pixels: npt.NDArray[np.uint16],
    k: int,
    sop_uid: str,
) -> Path:
    """Write slice `k` of a series; `ds` holds the series header and is updated in place."""
    ps, t = spec.pixel_spacing, spec.slice_thickness
    z = k * t - (spec.slices - 1) * t / 2
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [
        _ds((1 - spec.columns) * ps / 2),
        _ds((1 - spec.rows) * ps / 2),
        _ds(z),
    ]
    ds.SliceLocation = _ds(z)
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RADFLOW_SYNTH_1"  # not pydicom's: bytes outlive upgrades
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    path = folder / f"IM{k + 1:04d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
