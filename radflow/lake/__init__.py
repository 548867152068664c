"""The lake: the one owner of where radflow's outputs live and how they are read back.

A stage asks the lake for typed records (`lake.qc(volume) -> VolumeQC`) and hands it records
to write; it never builds a key or parses JSON, and it never imports another stage to read
that stage's output (as Dagster's I/O managers own their paths, STYLE.md 10).

Layout, under the store's root (a content address is `<prefix>/<version>/<hash>`):

    deid/<v>/<h>/<series>/<sop>.dcm, study.json   de-identified study; the manifest commits it
    deid/<v>/<h>/labelmap.nii.gz                  the label map given with it (--masks), if any
    volumes/<v>/<h>/image|input|mask.nii.gz, ..., qc.json   a preprocessed study
    features/<v>/<h>                               one feature row (JSON)
    labels/<study_id>.json                          a training label, by pseudonym
    catalog/<study_id>.json                         a study's current feature row
    datasets/<v>/<h>                               a training table (JSON)
    candidates/<v>/<h>/<name>.pkl, predictions.json fitted candidates
    models/<v>/<h>/model.pkl, metrics.json, card.json, decision.json; models/champion.json
    models/<v>/<h>/roi/<seg id>.json               the classifier with a segmentation model's ROIs
    segmentations/<v>/<h>/model.pt, overlays/<study_id>.png, card.json, decision.json;
    segmentations/champion.json                    the segmentation registry and its champion
    scores/<v>/<h>                                 a study's score (JSON)
    scored/<study_id>.json                          a study's latest scoring: score, delivery, time
    reports/<v>/<h>/...                             study and model reports
    quarantine/<stage>/<hash>.json                  inputs set aside, and why
    pending/<arrival>.json                          arrivals not scored yet
    watch/<hash>.json                               what an inbox watcher has announced

Objects that complete a multi-object output (the manifest, `qc.json`, `predictions.json`,
`card.json`, `study.html`) are written last, so their presence means the output is whole.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from radflow.errors import NotFoundError, RadflowError
from radflow.keys import sha256_bytes
from radflow.lake.records import (
    CandidatePredictions,
    CatalogEntry,
    Champion,
    Dataset,
    DatasetRow,
    Decision,
    FeatureRow,
    Label,
    Metrics,
    ModelCard,
    PendingArrival,
    Predictions,
    QuarantineRecord,
    Record,
    RoiEvaluation,
    Score,
    ScoredStudy,
    SegmentationCard,
    SegmentationChampion,
    SegmentationDecision,
    SeriesEntry,
    StudyManifest,
    VolumeQC,
)
from radflow.scratch import scratch_dir
from radflow.store import LocalStore, ObjectInfo, ObjectStore, validate_key

if TYPE_CHECKING:
    import numpy as np
    import SimpleITK as sitk

    from radflow.models.predictor import Inputs, Predictor
    from radflow.segmentation.model import SegmentationModel

__all__ = [
    "CandidatePredictions",
    "Champion",
    "Dataset",
    "DatasetRow",
    "Decision",
    "FeatureRow",
    "Label",
    "Lake",
    "Metrics",
    "ModelCard",
    "PendingArrival",
    "Predictions",
    "QuarantineRecord",
    "Score",
    "ScoredStudy",
    "SeriesEntry",
    "StudyManifest",
    "VolumeQC",
]

R = TypeVar("R", bound=Record)
VolumeImage = Literal["image", "input", "mask", "whole", "whole_mask"]

LABELMAP = "labelmap.nii.gz"
MANIFEST = "study.json"
QC = "qc.json"
PREDICTIONS = "predictions.json"
CARD = "card.json"
METRICS = "metrics.json"
DECISION = "decision.json"
MODEL = "model.pkl"
CHAMPION = "models/champion.json"
SEGMENTATION_MODEL = "model.pt"
SEGMENTATION_CHAMPION = "segmentations/champion.json"
STUDY_HTML = "study.html"


class Lake:
    """Typed access to the lake in `store`; every key radflow writes is spelled here."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @property
    def url(self) -> str:
        return self.store.url

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    # --- records in general --------------------------------------------------------------

    def _read(self, cls: type[R], key: str) -> R:
        return cls.from_json(self.store.get_bytes(key))

    def _write(self, key: str, record: Record) -> None:
        self.store.put_text(key, record.to_json())

    def has(self, key: str) -> bool:
        """Whether an output is complete: a single-object output exists, or a folder's
        committing object (see the module docstring) does."""
        for prefix, marker in (
            ("deid/", MANIFEST),
            ("volumes/", QC),
            ("candidates/", PREDICTIONS),
            ("models/", CARD),
            ("segmentations/", CARD),
        ):
            if key.startswith(prefix) and key.count("/") == 2:
                return self.store.exists(f"{key}/{marker}")
        return self.store.exists(key)

    def holds(self, output: object) -> bool:
        """Whether this lake still holds what a stage returned earlier (Prefect's cached
        value of it): an output key, or a promotion decision. Anything else ("", None, a
        count) names nothing to check."""
        if isinstance(output, str):
            return not output or self.has(output)
        if isinstance(output, Decision):
            return self.decision(output.model) is not None
        if isinstance(output, SegmentationDecision):
            return self.segmentation_decision(output.model) is not None
        return True

    # --- de-identified studies -------------------------------------------------------------

    def put_instance(self, deid: str, series_uid: str, sop_uid: str, data: bytes) -> None:
        self.store.put_bytes(f"{deid}/{series_uid}/{sop_uid}.dcm", data)

    def put_manifest(self, deid: str, manifest: StudyManifest) -> None:
        self._write(f"{deid}/{MANIFEST}", manifest)

    def manifest(self, deid: str) -> StudyManifest:
        return self._read(StudyManifest, f"{deid}/{MANIFEST}")

    def put_study_labelmap(self, deid: str, path: Path) -> None:
        """A label map given with the study (`radflow ingest --masks`), already stripped to
        voxels and geometry; written before the manifest, which commits the study."""
        self.store.put_file(f"{deid}/{LABELMAP}", path)

    def study_labelmap(self, deid: str, folder: Path) -> Path | None:
        """The study's label map as a local file, or None when it was given none."""
        key = f"{deid}/{LABELMAP}"
        if not self.store.exists(key):
            return None
        path = folder / LABELMAP
        self.store.download(key, path)
        return path

    def instances(self, deid: str, series_uid: str) -> list[str]:
        """The keys of a de-identified series' instances, in key order."""
        return sorted(o.key for o in self.store.list(f"{deid}/{series_uid}/"))

    def series_files(self, deid: str, series_uid: str, folder: Path) -> list[Path]:
        """A series' instances as local files (ITK and pydicom read paths), for reading only.

        A lake that is a folder gives its own files: an object is never rewritten in place
        (a write renames a whole new file over it), so reading them is safe, and copying a
        600-file CT study into `folder` first cost a tenth of the volumes stage. Any other
        store's instances are downloaded into `folder`."""
        paths = []
        for key in self.instances(deid, series_uid):
            path = self.store.local_path(key)
            if path is None:
                path = folder / key.rsplit("/", 1)[1]
                self.store.download(key, path)
            paths.append(path)
        return sorted(paths)

    def download(self, key: str, dest: Path) -> None:
        self.store.download(key, dest)

    # --- labels ----------------------------------------------------------------------------

    def put_label(self, study_id: str, label: int) -> None:
        self._write(f"labels/{study_id}.json", Label(label=label))

    def label(self, study_id: str) -> int | None:
        key = f"labels/{study_id}.json"
        if not self.store.exists(key):
            return None
        return self._read(Label, key).label

    def labelled_studies(self) -> set[str]:
        return {o.key.removeprefix("labels/").removesuffix(".json") for o in self._labels()}

    def labels_version(self) -> list[str]:
        """The label objects' keys and ETags: changes when any label is written again."""
        return [f"{o.key}:{o.etag}" for o in self._labels()]

    def _labels(self) -> Iterator[ObjectInfo]:
        return self.store.list("labels/")

    # --- volumes ---------------------------------------------------------------------------

    def put_qc(self, volume: str, qc: VolumeQC) -> None:
        self._write(f"{volume}/{QC}", qc)

    def qc(self, volume: str) -> VolumeQC:
        return self._read(VolumeQC, f"{volume}/{QC}")

    def put_image(self, volume: str, name: str, image: sitk.Image) -> None:
        """`<volume>/<name>.nii.gz`, compressed (ITK writes paths, so through a temporary file)."""
        import SimpleITK as sitk

        with scratch_dir("lake") as tmp:
            path = tmp / f"{name}.nii.gz"
            sitk.WriteImage(image, str(path), useCompression=True)
            self.store.put_file(f"{volume}/{name}.nii.gz", path)

    def image(self, volume: str, name: VolumeImage | str = "image") -> sitk.Image:
        """`image` (scanner units, what features read), `input` (normalised, what a network
        reads), `mask` (the ROI), or a registered `secondary_<n>`."""
        import SimpleITK as sitk

        with scratch_dir("lake") as tmp:
            path = tmp / f"{name}.nii.gz"
            self.store.download(f"{volume}/{name}.nii.gz", path)
            image = sitk.ReadImage(str(path))
        return image

    def network_input(self, volume: str) -> np.ndarray:
        """A study's network input as a float32 (D, H, W) array."""
        import numpy as np
        import SimpleITK as sitk

        return np.asarray(sitk.GetArrayFromImage(self.image(volume, "input")), dtype=np.float32)

    def model_inputs(
        self, rows: Sequence[FeatureRow], names: Sequence[str], volumes: bool
    ) -> Inputs:
        """Feature columns in `names` order, and the volumes when the model reads them."""
        import numpy as np

        from radflow.models.predictor import Inputs

        x = np.array([[float(r.features[n]) for n in names] for r in rows], dtype=np.float64)
        v = np.stack([self.network_input(r.volume) for r in rows]) if volumes else None
        return Inputs(features=x.reshape(len(rows), len(names)), volumes=v)

    def put_volume_file(self, volume: str, name: str, data: bytes | Path) -> None:
        """A volume's side output: a secondary's transform, a registration checkerboard."""
        key = f"{volume}/{name}"
        if isinstance(data, Path):
            self.store.put_file(key, data)
        else:
            self.store.put_bytes(key, data)

    def registration_png(self, volume: str, series: int = 1) -> bytes | None:
        key = f"{volume}/registration_{series}.png"
        return self.store.get_bytes(key) if self.store.exists(key) else None

    # --- feature rows and the catalog --------------------------------------------------------

    def put_feature_row(self, key: str, row: FeatureRow) -> None:
        self._write(key, row)

    def feature_row(self, key: str) -> FeatureRow:
        return self._read(FeatureRow, key)

    def point_catalog(self, study_id: str, features: str) -> bool:
        """Make `features` the study's current row; False when it already was."""
        key, entry = f"catalog/{study_id}.json", CatalogEntry(features=features)
        if self.store.exists(key) and self.store.get_text(key) == entry.to_json():
            return False
        self._write(key, entry)
        return True

    def current_features(self) -> list[str]:
        """Every study's current feature row."""
        return sorted(self._read(CatalogEntry, o.key).features for o in self._catalog())

    def study_features(self, study_id: str) -> str:
        """The study's current feature row: the catalog's (ingest), else the row it was last
        scored on (scoring does not catalog: a new unlabelled study would change every
        training table); `study_id` is the pseudonym reports and runs show."""
        key = f"catalog/{study_id}.json"
        try:
            validate_key(key)
        except ValueError as err:
            raise RadflowError(
                f"bad study ID: {err}", hint="give a pseudonymous study ID"
            ) from None
        if self.store.exists(key):
            return self._read(CatalogEntry, key).features
        scored = self.scored(study_id)
        if scored is None:
            raise NotFoundError(
                f"no study {study_id} in the catalog or among the scored studies",
                hint="give the pseudonymous study ID a report shows; ingest or score it first",
            )
        return scored.features

    def _catalog(self) -> Iterator[ObjectInfo]:
        return self.store.list("catalog/")

    # --- training ----------------------------------------------------------------------------

    def put_dataset(self, key: str, dataset: Dataset) -> None:
        self._write(key, dataset)

    def dataset(self, key: str) -> Dataset:
        return self._read(Dataset, key)

    def put_candidates(
        self, folder: str, predictors: dict[str, object], found: Predictions
    ) -> None:
        """Fitted candidates, then their predictions (the commit marker)."""
        for name, predictor in predictors.items():
            self.store.put_bytes(f"{folder}/{name}.pkl", _pickled(predictor))
        self._write(f"{folder}/{PREDICTIONS}", found)

    def predictions(self, folder: str) -> Predictions:
        return self._read(Predictions, f"{folder}/{PREDICTIONS}")

    def candidate(self, folder: str, name: str) -> Predictor:
        return _unpickled(self.store.get_bytes(f"{folder}/{name}.pkl"))

    # --- the registry --------------------------------------------------------------------------

    def put_model(self, model: str, predictor: object, metrics: Metrics, card: ModelCard) -> None:
        """A registry entry; the card, written last, commits it."""
        self.store.put_bytes(f"{model}/{MODEL}", _pickled(predictor))
        self._write(f"{model}/{METRICS}", metrics)
        self._write(f"{model}/{CARD}", card)

    def card(self, model: str) -> ModelCard:
        return self._read(ModelCard, f"{model}/{CARD}")

    def metrics(self, model: str) -> Metrics:
        return self._read(Metrics, f"{model}/{METRICS}")

    def model(self, model: str) -> Predictor:
        return _unpickled(self.store.get_bytes(f"{model}/{MODEL}"))

    def decision(self, model: str) -> Decision | None:
        key = f"{model}/{DECISION}"
        return self._read(Decision, key) if self.store.exists(key) else None

    def put_decision(self, decision: Decision) -> None:
        self._write(f"{decision.model}/{DECISION}", decision)

    def champion(self) -> str:
        """The champion model's address; NotFoundError when there is none yet."""
        if not self.store.exists(CHAMPION):
            raise NotFoundError(
                "no champion model", hint="run `radflow train` on labelled studies first"
            )
        return self._read(Champion, CHAMPION).model

    def has_champion(self) -> bool:
        return self.store.exists(CHAMPION)

    def set_champion(self, pointer: Champion) -> None:
        self._write(CHAMPION, pointer)

    # --- the segmentation registry ----------------------------------------------------------

    def put_segmentation(
        self,
        model: str,
        weights: bytes,
        overlays: dict[str, bytes],
        card: SegmentationCard,
    ) -> None:
        """A segmentation registry entry: weights, overlay images, then the card (commits)."""
        self.store.put_bytes(f"{model}/{SEGMENTATION_MODEL}", weights)
        for study_id, png in overlays.items():
            self.store.put_bytes(f"{model}/overlays/{study_id}.png", png)
        self._write(f"{model}/{CARD}", card)

    def segmentation_card(self, model: str) -> SegmentationCard:
        return self._read(SegmentationCard, f"{model}/{CARD}")

    def segmentation_model(self, model: str) -> SegmentationModel:
        from radflow.segmentation.model import SegmentationModel

        return SegmentationModel.from_bytes(self.store.get_bytes(f"{model}/{SEGMENTATION_MODEL}"))

    def segmentation_overlay(self, model: str, study_id: str) -> bytes | None:
        key = f"{model}/overlays/{study_id}.png"
        return self.store.get_bytes(key) if self.store.exists(key) else None

    def segmentation_decision(self, model: str) -> SegmentationDecision | None:
        key = f"{model}/{DECISION}"
        return self._read(SegmentationDecision, key) if self.store.exists(key) else None

    def put_segmentation_decision(self, decision: SegmentationDecision) -> None:
        self._write(f"{decision.model}/{DECISION}", decision)

    def segmentation_champion(self) -> str | None:
        """The segmentation champion's address, None before the first promotion."""
        if not self.store.exists(SEGMENTATION_CHAMPION):
            return None
        return self._read(SegmentationChampion, SEGMENTATION_CHAMPION).model

    def set_segmentation_champion(self, pointer: SegmentationChampion) -> None:
        self._write(SEGMENTATION_CHAMPION, pointer)

    def segmentation_models(self) -> list[str]:
        """Every registered segmentation model's address."""
        return [
            info.key.rsplit("/", 1)[0]
            for info in self.store.list("segmentations/")
            if info.key.endswith(f"/{CARD}") and info.key.count("/") == 3
        ]

    def find_segmentation(self, model_id: str) -> str:
        """The address of the registered segmentation model `model_id` (its short id)."""
        for folder in self.segmentation_models():
            wanted = model_id.removeprefix("seg-")
            if wanted and folder.rsplit("/", 1)[-1].startswith(wanted):
                return folder
        raise NotFoundError(
            f"no segmentation model {model_id}", hint="`radflow train --json` lists the models"
        )

    @staticmethod
    def roi_evaluation_key(model: str, segmentation: str) -> str:
        return f"{model}/roi/{segmentation.rsplit('/', 1)[-1][:12]}.json"

    def put_roi_evaluation(self, record: RoiEvaluation) -> str:
        key = self.roi_evaluation_key(record.model, record.segmentation)
        self._write(key, record)
        return key

    def roi_evaluation(self, model: str, segmentation: str) -> RoiEvaluation | None:
        key = self.roi_evaluation_key(model, segmentation)
        return self._read(RoiEvaluation, key) if self.store.exists(key) else None

    # --- scores and reports -----------------------------------------------------------------

    def put_score(self, key: str, score: Score) -> None:
        self._write(key, score)

    def score(self, key: str) -> Score:
        return self._read(Score, key)

    def put_scored(self, scored: ScoredStudy) -> None:
        self._write(_scored_key(scored.study_id), scored)

    def scored(self, study_id: str) -> ScoredStudy | None:
        """The study's latest scoring, or None when it was never scored."""
        key = _scored_key(study_id)
        return self._read(ScoredStudy, key) if self.store.exists(key) else None

    def scored_studies(self) -> list[tuple[ScoredStudy, float]]:
        """Every scored study's latest scoring, by study ID, with when it was recorded
        (seconds since the epoch: the object's time in the store)."""
        return [(self._read(ScoredStudy, o.key), o.modified) for o in self.store.list("scored/")]

    def location(self, key: str) -> str:
        """Where a user finds an object: its absolute path in a local folder's lake, its URL
        (`s3://bucket/prefix/key`) otherwise."""
        if isinstance(self.store, LocalStore):
            return str(self.store.root / key)
        return f"{self.url.rstrip('/')}/{key}"

    def put_report_file(self, folder: str, name: str, data: bytes | str | Path) -> str:
        key = f"{folder}/{name}"
        if isinstance(data, Path):
            self.store.put_file(key, data)
        elif isinstance(data, str):
            self.store.put_text(key, data)
        else:
            self.store.put_bytes(key, data)
        return key

    # --- quarantine ----------------------------------------------------------------------------

    def quarantine(self, record: QuarantineRecord) -> str:
        """Write the record; returns its key."""
        self._write(record.store_key, record)
        return record.store_key

    def quarantined(self, stage: str, input_key: str) -> QuarantineRecord | None:
        """The record of `input_key` set aside at `stage`, if it was."""
        key = QuarantineRecord.for_key("", input_key, stage, "-").store_key  # as run_stage
        return self._read(QuarantineRecord, key) if self.store.exists(key) else None

    def quarantine_count(self) -> int:
        return sum(1 for _ in self.store.list("quarantine/"))

    def clear_quarantine(self, keys: Sequence[str]) -> int:
        """Delete the records among `keys` that exist (inputs that are fine now); one listing
        per stage folder, not one request per key. Returns how many went."""
        wanted = set(keys)
        folders = {key.rsplit("/", 1)[0] + "/" for key in wanted}
        gone = [i.key for f in sorted(folders) for i in self.store.list(f) if i.key in wanted]
        for key in gone:
            self.store.delete(key)
        return len(gone)

    def quarantined_record(self, key: str) -> QuarantineRecord:
        """The record at `key` (as `quarantine_records` lists them)."""
        return self._read(QuarantineRecord, key)

    def quarantine_records(self) -> Iterator[tuple[str, QuarantineRecord]]:
        """Every quarantine record and its key, stage by stage."""
        for info in self.store.list("quarantine/"):
            if info.key.endswith(".json"):
                yield info.key, self._read(QuarantineRecord, info.key)

    # --- pending arrivals ------------------------------------------------------------------------

    def put_pending(self, record: PendingArrival) -> None:
        self._write(_pending_key(record.arrival), record)

    def pending(self, arrival: str) -> PendingArrival | None:
        try:
            return self._read(PendingArrival, _pending_key(arrival))
        except FileNotFoundError:  # never written, or its run has just finished
            return None

    def pending_arrivals(self) -> list[PendingArrival]:
        """The records now; one that a finishing run deletes while this reads is simply done."""
        records = []
        for info in self.store.list("pending/"):
            try:
                records.append(self._read(PendingArrival, info.key))
            except FileNotFoundError:
                continue
        return records

    def clear_pending(self, arrival: str) -> None:
        if self.store.exists(_pending_key(arrival)):
            self.store.delete(_pending_key(arrival))

    def emitted(self, source_url: str, prefix: str) -> dict[str, str]:
        """A watcher's memory: the signature each arrival (by hash) was emitted at."""
        key = _watch_key(source_url, prefix)
        return json.loads(self.store.get_text(key)) if self.store.exists(key) else {}

    def put_emitted(self, source_url: str, prefix: str, seen: dict[str, str]) -> None:
        self.store.put_text(_watch_key(source_url, prefix), json.dumps(seen, sort_keys=True))

    # --- helpers ---------------------------------------------------------------------------------


def _watch_key(source_url: str, prefix: str) -> str:
    return f"watch/{sha256_bytes(f'{source_url}|{prefix}'.encode())[:16]}.json"


def _scored_key(study_id: str) -> str:
    key = f"scored/{study_id}.json"
    validate_key(key)
    return key


def _pending_key(arrival: str) -> str:
    return f"pending/{arrival}.json"


def _pickled(value: object) -> bytes:
    buf = io.BytesIO()
    pickle.dump(value, buf, protocol=5)
    return buf.getvalue()


def _unpickled(data: bytes) -> Predictor:
    # The lake is written only by radflow's own stages; pickle is trusted within it.
    predictor: Predictor = pickle.loads(data)
    return predictor
