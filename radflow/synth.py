"""Synthetic CT studies for the demo, the tests and the benchmarks.

Real scans cannot ship with the project, so this writes look-alike DICOM CT studies with
realistic PHI (in headers, free text and folder names) for de-identification to remove, an
optional second series moved by a known rigid transform for registration to undo, and a
lesion whose look depends on the label, so a model has something real to learn.

Everything is a pure function of the spec: UIDs are name-based (UUID v5 under 2.25), random
draws come from seeded generators and no clock is read, so the same spec gives byte-identical
files. Study i depends only on the seed, the geometry and i, not on how many studies are made.

Real studies hold more than one clean axial series, so a spec can also ask (all off by
default, and the default output stays byte for byte what it always was) for a topogram, a
coronal reformat, a 5 mm axial recon, a DICOM SEG or RTSTRUCT outlining the lesion, and
soft-tissue lesions that the demo's 80 HU threshold rule cannot find; `realistic` gives a
documented mix of them, and `truth.csv` beside the labels says what each study got.
"""

from __future__ import annotations

import csv
import datetime as dt
import uuid
from dataclasses import dataclass, field, replace
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


ANNOTATION_KINDS = ("seg", "rtstruct")
THICK_MM = 5.0  # the thicker axial recon's slice thickness and spacing


@dataclass(frozen=True)
class SynthSpec:
    studies: int = 40
    rows: int = 64
    columns: int = 64
    slices: int = 48
    pixel_spacing: float = 0.9  # mm, in-plane
    slice_thickness: float = 2.0  # mm, also the slice spacing
    seed: int = 0
    # Opt-in realism; each fraction is the share of studies that get the thing, drawn per study
    # from (seed, study index) alone, so study i still does not depend on how many are made.
    localizers: float = 0.0  # a 1-image AP topogram, ImageType ORIGINAL\PRIMARY\LOCALIZER
    reformats: float = 0.0  # a coronal reformat, DERIVED\SECONDARY\REFORMATTED, more images
    thick_recons: float = 0.0  # a second axial series of 5 mm slices
    annotations: tuple[str, ...] = ()  # kinds to draw from: "seg", "rtstruct"
    annotated: float = 1.0  # of the studies, when `annotations` names a kind
    soft_tissue_lesions: float = 0.0  # a 20-40 HU lesion in soft tissue, not the 100 HU one


def realistic(spec: SynthSpec = SynthSpec()) -> SynthSpec:
    """`spec` with the mix `radflow synth --realistic` writes: a topogram in every study, a
    coronal reformat and a 5 mm recon in half, a SEG or an RTSTRUCT (even odds) in four
    studies of five, and a soft-tissue lesion in half (those without an annotation have no
    region of interest anyone can find, as happens with real deliveries)."""
    return replace(
        spec,
        localizers=1.0,
        reformats=0.5,
        thick_recons=0.5,
        annotations=ANNOTATION_KINDS,
        annotated=0.8,
        soft_tissue_lesions=0.5,
    )


@dataclass(frozen=True)
class LesionTruth:
    """The lesion's exact voxels on the primary series' grid, kept as its box (small)."""

    shape: tuple[int, int, int]  # the primary volume's (z, y, x)
    corner: tuple[int, int, int]  # where the box starts in it
    box: npt.NDArray[np.bool_] = field(compare=False, repr=False)

    @property
    def voxels(self) -> int:
        return int(self.box.sum())

    def mask(self) -> npt.NDArray[np.bool_]:
        """The lesion as a (z, y, x) boolean volume on the primary's grid."""
        full = np.zeros(self.shape, dtype=bool)
        z, y, x = self.corner
        dz, dy, dx = self.box.shape
        full[z : z + dz, y : y + dy, x : x + dx] = self.box
        return full


@dataclass(frozen=True)
class SynthStudy:
    patient_id: str  # the ORIGINAL (PHI) patient id
    study_uid: str  # the ORIGINAL StudyInstanceUID
    label: int  # 0 or 1
    series_uids: tuple[str, ...]  # by SeriesNumber; the first is the primary axial series
    files: tuple[Path, ...]  # every file written for this study
    kinds: tuple[str, ...] = ()  # per series: axial, post-contrast, thick, coronal, localizer,
    # seg or rtstruct
    lesion: str = "bright"  # or "soft": soft tissue, below the demo rule's threshold
    truth: LesionTruth | None = field(default=None, compare=False, repr=False)

    @property
    def annotation(self) -> str:
        """The annotation written for the study: seg, rtstruct, or "" for none."""
        return next((k for k in self.kinds if k in ANNOTATION_KINDS), "")


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

    The opt-in series get their own numbers: 3 the 5 mm recon, 4 the coronal reformat, 5 the
    topogram, 6 the SEG, 7 the RTSTRUCT. With any of them asked for, `truth.csv` beside
    `labels_csv` gives per study (by original StudyInstanceUID, like the labels) the lesion's
    kind and exact voxel count on the primary grid, the annotation and the series written.
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
    if _variant(spec):
        with open(labels_csv.parent / "truth.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(
                ["study_uid", "label", "lesion", "lesion_voxels", "annotation", "series"]
            )
            writer.writerows(
                sorted(
                    (s.study_uid, s.label, s.lesion, s.truth.voxels if s.truth else 0,
                     s.annotation, ";".join(s.kinds))
                    for s in out
                )
            )  # fmt: skip
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
    for name in ("localizers", "reformats", "thick_recons", "annotated", "soft_tissue_lesions"):
        if not 0 <= (share := getattr(spec, name)) <= 1:
            raise ConfigError(f"synth.{name}", f"must be a fraction in [0, 1], got {share}")
    if unknown := sorted(set(spec.annotations) - set(ANNOTATION_KINDS)):
        raise ConfigError("synth.annotations", f"unknown kind(s) {unknown}: use seg, rtstruct")


def _variant(spec: SynthSpec) -> tuple[object, ...]:
    """The opt-in realism of `spec`, () when none is asked for (then UIDs are as they were)."""
    extras = (
        float(spec.localizers), float(spec.reformats), float(spec.thick_recons),
        float(spec.soft_tissue_lesions), ",".join(spec.annotations),
        float(spec.annotated) if spec.annotations else 1.0,
    )  # fmt: skip
    return () if extras == (0.0, 0.0, 0.0, 0.0, "", 1.0) else ("real", *extras)


def _chance(spec: SynthSpec, index: int, what: str) -> float:
    """A uniform draw in [0, 1) for study `index` from the seed alone (name-based, like UIDs),
    so adding an opt-in series to some studies draws nothing from the studies' generators."""
    name = f"radflow-synth-chance/{spec.seed}/{index}/{what}"
    return uuid.uuid5(uuid.NAMESPACE_OID, name).int / 2.0**128


def _uid(spec: SynthSpec, *parts: object) -> str:
    """A name-based 2.25 UID: deterministic, unique per (seed, geometry, parts)."""
    geometry = (spec.rows, spec.columns, spec.slices, spec.pixel_spacing, spec.slice_thickness)
    name = "/".join(
        str(p) for p in ("radflow-synth", spec.seed, *geometry, *_variant(spec), *parts)
    )
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


def _phantom(
    spec: SynthSpec, rng: np.random.Generator, label: int, soft: bool = False, tidy: bool = False
) -> tuple[Volume, LesionTruth]:
    """HU volume (z, y, x): air, a body with two lungs, and a label-dependent lesion; and the
    lesion's exact voxels.

    Physical coordinates are centred on the volume, so the lesion offset is in mm from the
    centre; every size scales with the smallest half-extent `h`, so the lesion (radius <=
    0.48 h, centre within 0.14 h of the centre) stays inside the body and the volume.
    A `soft` lesion has soft tissue's HU (label 0: 20-30 HU, homogeneous; label 1: 30-40 HU,
    heterogeneous, no calcification) and a radius <= 0.2 of the half-width, which keeps it
    clear of the lungs; `tidy` makes every slice of it one simple region (for an RTSTRUCT).
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
    if soft:  # the lungs' inner edges are 0.38 hx from the centre; this reaches <= 0.32 hx
        r0 = min(r0, 0.2 * hx)
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
        inside = _tidy(inside) if tidy else inside
        level = rng.uniform(20, 30) if soft else 110
        box[inside] = level + 5 * rng.standard_normal(int(inside.sum()), dtype=np.float32)
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
        inside = _tidy(inside) if tidy else inside
        n = int(inside.sum())
        if soft:
            values = rng.uniform(30, 40) + 20 * rng.standard_normal(n, dtype=np.float32)
        else:
            values = 100 + 25 * rng.standard_normal(n, dtype=np.float32)
            values[rng.random(n) < 0.03] += 150
        box[inside] = values
    corner = (kz.start, ky.start, kx.start)
    shape = (spec.slices, spec.rows, spec.columns)
    return vol, LesionTruth(shape, corner, np.ascontiguousarray(inside))


def _tidy(inside: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    from radflow.synth_series import tidy_lesion

    return tidy_lesion(inside)


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
    extras = _extras(spec, index)
    soft = _chance(spec, index, "soft") < spec.soft_tissue_lesions
    phantom_rng = np.random.default_rng([spec.seed, index])
    vol, truth = _phantom(spec, phantom_rng, label, soft, tidy="rtstruct" in extras)
    series = [(1, vol, "AXIAL SOFT TISSUE", f"Routine chest CT of {who}. No motion.")]
    if index % 3 == 1:
        angle, (tx, ty, tz) = _motion(rng)
        motion = f"motion rz={angle:+.3f}deg t=({tx:+.3f},{ty:+.3f},{tz:+.3f})mm"
        comment = f"Post-contrast CT of {who}. {motion}"
        series.append((2, _moved(vol, spec, angle, (tx, ty, tz)), "AXIAL POST CONTRAST", comment))
    series_uids: list[str] = []
    files: list[Path] = []
    kinds = ["axial", "post-contrast"][: len(series)]
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
        stored = _stored(hu)
        for k in range(spec.slices):
            files.append(_write_slice(folder, ds, spec, stored[k], k, _uid(spec, index, number, k)))
    if extras:
        from radflow.synth_series import write_extras  # highdicom, scipy: only when asked

        primary = files[: spec.slices]
        written = write_extras(
            spec, index, extras, study, primary, vol, truth, inbox / patient.patient_id / accession
        )
        for kind, uid, paths in written:
            kinds.append(kind)
            series_uids.append(uid)
            files.extend(paths)
    return SynthStudy(
        patient.patient_id,
        study.StudyInstanceUID,
        label,
        tuple(series_uids),
        tuple(files),
        tuple(kinds),
        "soft" if soft else "bright",
        truth,
    )


def _extras(spec: SynthSpec, index: int) -> tuple[str, ...]:
    """The opt-in series study `index` gets, in SeriesNumber order."""
    out = [
        kind
        for kind, share in (
            ("thick", spec.thick_recons),
            ("coronal", spec.reformats),
            ("localizer", spec.localizers),
        )
        if _chance(spec, index, kind) < share
    ]
    if spec.annotations and _chance(spec, index, "annotated") < spec.annotated:
        kinds = sorted(set(spec.annotations), key=ANNOTATION_KINDS.index)
        out.append(kinds[int(_chance(spec, index, "annotation") * len(kinds))])
    return tuple(out)


def _stored(hu: Volume) -> npt.NDArray[np.uint16]:
    """HU -> the stored 12-bit values (RescaleIntercept -1024, slope 1)."""
    stored: npt.NDArray[np.uint16] = np.clip(np.rint(hu) - RESCALE_INTERCEPT, 0, 4095).astype(
        np.uint16
    )
    return stored


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
    ds.SliceLocation = _ds(z)
    corner = ((1 - spec.columns) * ps / 2, (1 - spec.rows) * ps / 2, z)
    return _write_image(folder, ds, pixels, k, sop_uid, corner)


def _write_image(
    folder: Path,
    ds: Dataset,
    pixels: npt.NDArray[np.uint16],
    k: int,
    sop_uid: str,
    corner: tuple[float, float, float],
) -> Path:
    """Write image `k` of a series as `folder/IM<k+1>.dcm`, its first pixel's centre at
    `corner` (mm); `ds` holds the series header and is updated in place."""
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in corner]
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
