"""The lake's records: one typed, frozen definition per JSON object the stages write.

Validated when built or read, then trusted (STYLE.md 3). Each record serialises to the bytes
the lake has always held (`Record.to_json`: sorted keys, one-space indent), so content
addresses that hash a record, and the byte-identical demo, do not move when the code does.
Fields written only in some cases (`Decision.previous_auc`, a candidate's `importances`) are
left out of the JSON when absent, as before. `preprocessing`, `extraction` and `params` stay
open mappings: they are descriptions of settings, compared and hashed whole, never read
field by field.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from radflow.errors import QuarantineError
from radflow.keys import sha256_bytes
from radflow.models.results import Evaluation, Report

SettingsDescription = dict[str, Any]
"""A description of settings (preprocessing, extraction, training parameters): opaque here."""


def _absent_if_none(value: object) -> bool:
    return value is None


def _absent_if_empty(value: object) -> bool:
    return not value


class Record(BaseModel):
    """A lake object. `to_json` gives the bytes the lake stores; `from_json` reads them back."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    indent: ClassVar[int | None] = 1
    # The first wave wrote a few records with pydantic's own JSON (fields in their order).
    in_field_order: ClassVar[bool] = False

    def to_json(self) -> str:
        if self.in_field_order:
            return self.model_dump_json(indent=self.indent)
        return json.dumps(self.model_dump(), indent=self.indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        return cls.model_validate_json(text)


# --- fetch and anonymize ------------------------------------------------------------------


class QuarantineRecord(Record):
    """Why an input was set aside. Names the input by a hash of its key: keys may hold PHI."""

    in_field_order: ClassVar[bool] = True
    source_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    stage: str
    reason: str
    error_class: str = ""
    #: radflow's own words on what exactly was wrong (a gap in mm, a count): never a value
    #: read from the input. Left out when empty, so records written before it keep their bytes.
    detail: str = Field(default="", exclude_if=_absent_if_empty)

    @classmethod
    def for_key(
        cls, source: str, key: str, stage: str, reason: str, error: str = "", detail: str = ""
    ) -> QuarantineRecord:
        return cls(
            source_hash=cls.input_hash(source, key),
            stage=stage,
            reason=reason,
            error_class=error,
            detail=detail,
        )

    @staticmethod
    def input_hash(source: str, key: str) -> str:
        """How a record names its input: its key (PHI) never leaves, only this hash."""
        return sha256_bytes(f"{source}/{key}".encode())

    @classmethod
    def of_error(cls, source: str, key: str, stage: str, err: QuarantineError) -> QuarantineRecord:
        """The record of `err` raised on the input `key`: its reason and its detail."""
        return cls.for_key(source, key, stage, err.reason, type(err).__name__, err.detail)

    @property
    def store_key(self) -> str:
        """Where the lake keeps it: by stage, named by the input's hash."""
        return f"quarantine/{self.stage}/{self.source_hash}.json"


class SeriesEntry(Record):
    series_uid: str
    modality: str
    instances: int


class StudyManifest(Record):
    """What the de-identified study holds; written last, so its presence means complete."""

    in_field_order: ClassVar[bool] = True
    study_id: str
    study_uid: str
    patient_id: str
    series: list[SeriesEntry]


class Label(Record):
    """A study's training label, stored under its pseudonym (`labels/<study_id>.json`)."""

    indent: ClassVar[int | None] = None
    label: int


# --- preprocess ---------------------------------------------------------------------------


class Geometry(Record):
    size: list[int]
    spacing_mm: list[float]
    origin_mm: list[float]
    direction: list[float]


class Registration(Record):
    """One secondary series registered onto the primary."""

    series: int
    kind: str
    metric: float
    iterations: int
    parameters: list[float]


class SeriesChoice(Record):
    """One image series of a study and what selection made of it (`rule`: the first rule
    it failed, "" when kept; `reason`: that rule's words). Attributes as the de-identified
    headers give them."""

    series_uid: str
    series_number: int | None
    modality: str
    sop_class: str
    image_type: list[str]
    description: str
    images: int
    frames: int
    slice_thickness_mm: float | None
    plane: str
    normal_angle_degrees: float | None
    role: str  # "primary", "secondary" or "dropped"
    rule: str
    reason: str


class StudyObject(Record):
    """A series of non-image objects (SEG, RTSTRUCT, SR, ...): kept in the study, never read
    as an image series."""

    series_uid: str
    series_number: int | None
    modality: str
    kind: str
    sop_class: str
    instances: int
    description: str


class SeriesSelection(Record):
    """Every series and object of a study, kept or dropped and why, and the primary's
    (de-identified) series UID (None: nothing could be the volume)."""

    series: list[SeriesChoice]
    objects: list[StudyObject]
    primary: str | None
    primary_rule: str

    @property
    def kept(self) -> list[SeriesChoice]:
        return [s for s in self.series if s.role != "dropped"]

    @property
    def dropped(self) -> list[SeriesChoice]:
        return [s for s in self.series if s.role == "dropped"]


class VolumeQC(Record):
    """A preprocessed volume's geometry, registration and warnings (`qc.json`, written last)."""

    study_id: str
    series: int
    native: Geometry
    intensity_hu: list[float]
    registration: list[Registration]
    warnings: list[str]
    preprocessing: SettingsDescription
    preprocessed: Geometry
    roi_voxels: int
    modality: str = ""
    selection: SeriesSelection | None = Field(default=None, exclude_if=_absent_if_none)
    #: Where the ROI came from: "annotation:SEG", "annotation:RTSTRUCT",
    #: "annotation:labelmap", "model" or "rule" (radflow/imaging/roi_source.py).
    roi_source: str = ""


# --- features, catalog, dataset -----------------------------------------------------------


class FeatureRow(Record):
    """One study's features (`features/<v>/<hash>` (JSON)) and where they came from."""

    study_id: str
    patient_id: str
    deid: str
    volume: str
    features: dict[str, float]
    extraction: SettingsDescription
    roi_source: str = ""  # as the volume's QC record says


class CatalogEntry(Record):
    """Which feature row is a study's current one (`catalog/<study_id>.json`)."""

    indent: ClassVar[int | None] = None
    features: str


class DatasetRow(FeatureRow):
    label: int
    features_key: str


class LabelsSummary(Record):
    labelled_studies: int
    unlabelled_studies: int
    labels_without_study: int
    stale_studies: int

    def line(self) -> str:
        """For the train run's log."""
        return (
            f"{self.labelled_studies} labelled studies; {self.unlabelled_studies} without a "
            f"label, {self.labels_without_study} labels without a study, {self.stale_studies} "
            "prepared with other settings"
        )


class Dataset(Record):
    """The labelled rows prepared with one set of settings, and what did not join."""

    rows: list[DatasetRow]
    unlabelled_studies: list[str]
    labels_without_study: list[str]
    stale_studies: list[str]
    preprocessing: SettingsDescription
    extraction: SettingsDescription

    def summary(self) -> LabelsSummary:
        return LabelsSummary(
            labelled_studies=len(self.rows),
            unlabelled_studies=len(self.unlabelled_studies),
            labels_without_study=len(self.labels_without_study),
            stale_studies=len(self.stale_studies),
        )


# --- candidates and the registry ----------------------------------------------------------


class Epoch(Record):
    epoch: int
    train_loss: float
    val_loss: float | None
    val_auc: float | None


class Training(Record):
    """How a network candidate trained (the CNN's history and where it stopped)."""

    device: str
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int | None
    history: list[Epoch]


class CandidatePredictions(Record):
    """One fitted candidate's probabilities on the validation and test patients."""

    validation: list[float]
    test: list[float]
    cv_auc: float | None
    importances: dict[str, float] | None = Field(default=None, exclude_if=_absent_if_none)
    training: Training | None = Field(default=None, exclude_if=_absent_if_none)


class Predictions(Record):
    """`predictions.json` of a candidates folder: by candidate name; written last."""

    candidates: dict[str, CandidatePredictions]

    def to_json(self) -> str:
        return json.dumps(
            {n: c.model_dump() for n, c in self.candidates.items()}, indent=1, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Predictions:
        return cls(candidates=json.loads(text))


class ComparisonRow(Record):
    candidate: str
    validation_auc: float
    test_auc: float
    cv_auc: float | None
    chosen: bool


class Fingerprint(Record):
    feature_rows: str
    labels: str


class CodeVersion(Record):
    radflow: str
    source_sha256: str

    @classmethod
    def of_this_code(cls) -> CodeVersion:
        """radflow's release and a digest of its source files: what made a model, beyond its
        data."""
        import hashlib
        from pathlib import Path

        from radflow import __version__

        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
        return cls(radflow=__version__, source_sha256=h.hexdigest())


class Split(Record):
    """Row indices into the dataset's rows, by part, and rows per class in each."""

    fit: list[int]
    validation: list[int]
    test: list[int]
    counts: dict[str, dict[str, int]]


class Calibration(Record):
    method: str
    fitted_on: str
    test_slope: float | None


class Sanity(Record):
    checks: dict[str, bool]
    bounds: tuple[float, float]

    @property
    def failed(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]


class ModelCard(Record):
    """A registered model: what it was trained on and how, and how it did (`card.json`)."""

    model_id: str
    address: str
    kind: str
    members: list[str]
    dataset: str
    candidates: list[str]
    params: SettingsDescription
    feature_names: list[str]
    preprocessing: SettingsDescription
    extraction: SettingsDescription
    fingerprint: Fingerprint
    code_version: CodeVersion
    labels: LabelsSummary
    split: Split
    calibration: Calibration
    sanity: Sanity
    comparison: list[ComparisonRow]
    training: Training | None
    feature_importances: dict[str, float]
    evaluation: Evaluation
    report: Report


class HeldOut(Record):
    """The held-out metrics a person compares, without the curves."""

    auc: float
    auc_ci: tuple[float, float]
    pr_auc: float
    accuracy: float
    precision: float
    recall: float
    specificity: float
    f1: float
    brier: float
    threshold: float
    confusion: tuple[tuple[int, int], tuple[int, int]]
    n: int
    n_positive: int

    @classmethod
    def of(cls, report: Report) -> HeldOut:
        return cls(**{name: getattr(report, name) for name in cls.model_fields})


class Metrics(Record):
    """`metrics.json`: the headline of a registry entry."""

    model_id: str
    held_out: HeldOut
    candidates: list[ComparisonRow]


def _decided(
    model_id: str, figure: str, previous: str, margin: float, promoted: bool, reason: str
) -> str:
    """A promotion decision for people (a Prefect artifact), classifier or segmentation."""
    verdict = "Promoted" if promoted else "Not promoted"
    return f"**{model_id}**: {figure}; {previous}; margin {margin}.\n\n**{verdict}**: {reason}"


class Decision(Record):
    """Whether a model became the champion, and why (`decision.json`, decided once)."""

    model: str
    model_id: str
    auc: float
    margin: float
    previous: str | None
    previous_auc: float | None = Field(default=None, exclude_if=_absent_if_none)
    promoted: bool
    reason: str

    def markdown(self) -> str:
        """The decision for people (a Prefect artifact)."""
        previous = (
            f"champion {self.previous}: test AUC {self.previous_auc:.3f} on the same rows"
            if self.previous_auc is not None
            else "no comparable champion"
        )
        return _decided(
            self.model_id,
            f"test AUC {self.auc:.3f}",
            previous,
            self.margin,
            self.promoted,
            self.reason,
        )


class Champion(Record):
    """The registry's one mutable pointer (`models/champion.json`)."""

    indent: ClassVar[int | None] = None
    model: str
    model_id: str
    auc: float


# --- the segmentation model ---------------------------------------------------------------


class SegmentationEpoch(Record):
    epoch: int
    train_loss: float
    val_dice: float | None


class SegmentationTraining(Record):
    """How the segmentation model trained: device, processes, where it stopped."""

    device: str
    processes: int
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int | None
    history: list[SegmentationEpoch]


class SegmentationSplit(Record):
    """The annotated volumes of each part of the classifier's patient-level split (the same
    test patients for both models), and the study ids of the test part."""

    fit: list[str]
    validation: list[str]
    test: list[str]
    test_studies: list[str]


class CaseResult(Record):
    """One test study: the model's mask against the annotation."""

    study_id: str
    patient_id: str
    volume: str
    dice: float
    hd95_mm: float | None
    surface_dice: float
    detected: bool | None  # None: an empty annotation, nothing to detect
    false_positive_ml: float
    truth_ml: float
    predicted_ml: float


class Estimate(Record):
    """A mean over test studies and its 95 % patient-level bootstrap interval (None where
    the metric is undefined on every study, e.g. HD95 with no prediction)."""

    mean: float | None
    ci: tuple[float, float] | None


class SegmentationEvaluation(Record):
    tolerance_mm: float
    n_cases: int
    n_patients: int
    dice: Estimate
    hd95_mm: Estimate
    surface_dice: Estimate
    detection_rate: Estimate
    false_positive_ml: Estimate
    non_empty_rate: float
    cases: list[CaseResult]


class SegmentationCard(Record):
    """A registered segmentation model (`segmentations/<v>/<h>/card.json`, written last)."""

    model_id: str
    address: str
    dataset: str
    params: SettingsDescription
    spacing_mm: tuple[float, float, float]
    preprocessing: SettingsDescription
    fingerprint: str
    code_version: CodeVersion
    split: SegmentationSplit
    training: SegmentationTraining
    evaluation: SegmentationEvaluation
    sanity: dict[str, bool]

    @property
    def failed(self) -> list[str]:
        return [name for name, ok in self.sanity.items() if not ok]


class SegmentationDecision(Record):
    """Whether a segmentation model became the champion: its test Dice against the
    champion's on the same test studies (`decision.json`, decided once)."""

    model: str
    model_id: str
    dice: float
    margin: float
    previous: str | None
    previous_dice: float | None
    promoted: bool
    reason: str

    def markdown(self) -> str:
        """The decision for people (a Prefect artifact)."""
        previous = (
            f"champion: test Dice {self.previous_dice:.3f} on the same studies"
            if self.previous_dice is not None
            else "no champion before"
        )
        return _decided(
            self.model_id,
            f"test Dice {self.dice:.3f}",
            previous,
            self.margin,
            self.promoted,
            self.reason,
        )


class SegmentationChampion(Record):
    """`segmentations/champion.json`: the model that finds new studies' regions."""

    indent: ClassVar[int | None] = None
    model: str
    model_id: str
    dice: float


class RoiEvaluation(Record):
    """The classifier on the annotated test studies, with their annotation's ROI and with the
    segmentation champion's (the path a new study takes)."""

    model: str
    segmentation: str
    segmentation_id: str
    studies: int
    annotation_auc: float | None
    model_roi_auc: float | None
    model_roi_auc_ci: tuple[float, float] | None
    empty: int

    def line(self) -> str:
        return (
            f"classifier AUC on {self.studies} annotated test studies: {self.annotation_auc} "
            f"with annotation ROIs, {self.model_roi_auc} with {self.segmentation_id}'s"
        )


# --- scoring and arrivals -----------------------------------------------------------------


class Score(Record):
    """A study's calibrated probability and call by one model (`scores/<v>/<hash>` (JSON))."""

    study_id: str
    features: str
    volume: str
    model: str
    model_id: str
    probability: float
    threshold: float
    positive: bool
    roi_source: str = ""  # as the volume's QC record says


class ScoredStudy(Record):
    """A study's latest scoring (`scored/<study_id>.json`): which score, of which delivery
    (a hash of its location: folder names may hold PHI). What `radflow results` lists and how
    `radflow report` finds a study that was scored, not ingested for training. When it was
    scored is the object's own time in the store: the lake holds no clock readings, so two
    runs on the same inputs write the same bytes."""

    indent: ClassVar[int | None] = None
    study_id: str
    score: str
    features: str
    delivery: str = Field(pattern=r"^[0-9a-f]{16}$")


class PendingArrival(Record):
    """An arrival not scored yet (`pending/<arrival>.json`): the inbox's URL and prefix
    (configuration, not PHI), the arrival's hash, why it waits and since when."""

    indent: ClassVar[int | None] = None
    source: str
    prefix: str
    depth: int
    arrival: str
    reason: str = ""
    since: float = 0.0
    announcements: int = 0
