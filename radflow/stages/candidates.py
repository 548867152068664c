"""Candidates: a training table -> fitted candidate models, `candidates/<v>/<hash>/`.

Each candidate is fitted on the fit patients; its probabilities on the validation and test
patients are kept in `predictions.json` (written last) for the registry to choose from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radflow.config import TrainSettings
from radflow.keys import address as content_address
from radflow.keys import short_id
from radflow.lake import Lake
from radflow.lake.records import CandidatePredictions, Epoch, Predictions, Training
from radflow.models.candidates import (
    FEATURE_CANDIDATES,
    feature_pipeline,
    grouped_cv_auc,
    selected_importances,
)
from radflow.models.predictor import OnFeatures, OnVolumes
from radflow.models.results import stored_probabilities
from radflow.models.table import training_table

NAME = "candidates"


def _split_params(settings: TrainSettings) -> dict[str, Any]:
    return settings.model_dump(include={"seed", "test_fraction", "validation_fraction"})


def feature_candidates_address(dataset: str, settings: TrainSettings) -> str:
    names = [c for c in settings.candidates if c in FEATURE_CANDIDATES]
    return content_address(
        "candidates",
        [dataset],
        {
            "kind": "features",
            "names": names,
            **_split_params(settings),
            **settings.model_dump(include={"n_estimators", "select_k"}),
        },
    )


def cnn_candidate_address(dataset: str, settings: TrainSettings) -> str:
    return content_address(
        "candidates",
        [dataset],
        {"kind": "cnn", **_split_params(settings), "cnn": settings.cnn.model_dump()},
    )


def fit_feature_candidates(lake: Lake, dataset: str, settings: TrainSettings) -> str:
    """Each feature candidate fitted on the fit patients, with its probabilities on the
    validation and test patients, and its patient-grouped CV AUC on fit + validation."""
    out = feature_candidates_address(dataset, settings)
    if lake.has(out):
        return out
    table = training_table(lake.dataset(dataset), settings)
    x = lake.model_inputs(table.rows, table.names, volumes=False).features
    split, y = table.split, table.y
    train = np.concatenate([split.fit, split.validation])
    fitted: dict[str, object] = {}
    found: dict[str, CandidatePredictions] = {}
    for name in (c for c in settings.candidates if c in FEATURE_CANDIDATES):
        cv_auc = grouped_cv_auc(
            feature_pipeline(name, settings, len(table.names)),
            x[train],
            y[train],
            [table.patients[i] for i in train],
            settings.seed,
        )
        pipeline = feature_pipeline(name, settings, len(table.names)).fit(
            x[split.fit], y[split.fit]
        )
        fitted[name] = OnFeatures(name, pipeline)
        found[name] = CandidatePredictions(
            validation=stored_probabilities(pipeline.predict_proba(x[split.validation])[:, 1]),
            test=stored_probabilities(pipeline.predict_proba(x[split.test])[:, 1]),
            cv_auc=cv_auc,
            importances=(
                selected_importances(pipeline, table.names) if name in ("rf", "gb") else None
            ),
        )
    lake.put_candidates(out, fitted, Predictions(candidates=found))
    return out


def fit_cnn_candidate(
    lake: Lake,
    dataset: str,
    settings: TrainSettings,
    checkpoints: Path | None = None,
) -> str:
    """The 3D CNN fitted on the fit patients' volumes, stopped early on the validation
    patients'. With `checkpoints` (a local folder) a killed training resumes where it was."""
    from radflow.models.cnn import CNNClassifier

    out = cnn_candidate_address(dataset, settings)
    if lake.has(out):
        return out
    table = training_table(lake.dataset(dataset), settings)
    volumes = lake.model_inputs(table.rows, table.names, volumes=True).volumes
    assert volumes is not None
    split, y, cnn_settings = table.split, table.y, settings.cnn
    cnn = CNNClassifier(
        width=cnn_settings.width,
        epochs=cnn_settings.epochs,
        batch_size=cnn_settings.batch_size,
        learning_rate=cnn_settings.learning_rate,
        patience=cnn_settings.patience,
        num_workers=cnn_settings.num_workers,
        device=cnn_settings.device,
        seed=settings.seed,
        checkpoint_dir=str(checkpoints / short_id(out)) if checkpoints else None,
    )
    cnn.fit(volumes[split.fit], y[split.fit], volumes[split.validation], y[split.validation])
    cnn.set_params(checkpoint_dir=None)  # a local path: not part of the model
    training = Training(
        device=cnn.device_,
        best_epoch=cnn.best_epoch_,
        epochs_run=len(cnn.history_),
        resumed_from_epoch=cnn.resumed_from_epoch_,
        history=[Epoch(**epoch) for epoch in cnn.history_],
    )
    found = CandidatePredictions(
        validation=stored_probabilities(cnn.predict_proba(volumes[split.validation])[:, 1]),
        test=stored_probabilities(cnn.predict_proba(volumes[split.test])[:, 1]),
        cv_auc=None,
        training=training,
    )
    lake.put_candidates(out, {"cnn": OnVolumes("cnn", cnn)}, Predictions(candidates={"cnn": found}))
    return out
