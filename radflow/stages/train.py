"""Train: labelled feature rows -> a model in the registry; promote it only if it is better.

Layout: `datasets/<v>/<hash>.json` (the training table), `models/<v>/<hash>/` (model.pkl,
card.json written last), `models/champion.json` (the registry's one mutable pointer).
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import asdict
from typing import Any

import numpy as np

from radflow.config import TrainSettings
from radflow.errors import NotFoundError, RadflowError
from radflow.keys import address, short_id
from radflow.models.evaluation import evaluate_report
from radflow.models.metrics import Evaluation, evaluate
from radflow.models.train import TrainParams, build_model, patient_split, validation_threshold
from radflow.stages.anonymize import read_label
from radflow.stages.features import read_features
from radflow.store import ObjectStore

CHAMPION = "models/champion.json"
CARD = "card.json"
DECISION = "decision.json"


def build_dataset(store: ObjectStore, feature_keys: list[str]) -> str:
    """The labelled rows among `feature_keys` (unlabelled studies are for scoring, not training)."""
    keys = sorted(set(feature_keys))
    rows = []
    for key in keys:
        row = read_features(store, key)
        label = read_label(store, str(row["study_id"]))
        if label is not None:
            rows.append({**row, "label": label, "features_key": key})
    out = address("datasets", keys, {"labels": [r["label"] for r in rows]})
    if not store.exists(out):
        store.put_text(out, json.dumps({"rows": rows}, sort_keys=True))
    return out


def _matrix(rows: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    return np.array([[float(r["features"][n]) for n in names] for r in rows])


def train_model(store: ObjectStore, dataset: str, settings: TrainSettings) -> str:
    params = TrainParams(**settings.model_dump())
    out = address("models", [dataset], asdict(params))
    if store.exists(f"{out}/{CARD}"):
        return out
    rows: list[dict[str, Any]] = json.loads(store.get_text(dataset))["rows"]
    if not rows:
        raise RadflowError("no labelled studies to train on", hint="ingest with --labels CSV")
    names = sorted(rows[0]["features"])
    y = np.array([int(r["label"]) for r in rows])
    patients = [str(r["patient_id"]) for r in rows]
    train, test = patient_split(patients, list(y), params.test_fraction, params.seed)
    x_train = _matrix([rows[i] for i in train], names)
    threshold = validation_threshold(params, x_train, y[train], [patients[i] for i in train])
    model = build_model(params).fit(x_train, y[train])
    proba = model.predict_proba(_matrix([rows[i] for i in test], names))[:, 1]
    evaluation = evaluate(list(y[test]), list(proba), threshold=threshold, n_train=len(train))
    report = evaluate_report(
        y[test], proba, threshold, groups=[patients[i] for i in test], seed=params.seed
    )
    forest = model[-1]
    card = {
        "model_id": "rf-" + short_id(out),
        "address": out,
        "dataset": dataset,
        "params": asdict(params),
        "feature_names": names,
        "feature_importances": dict(
            zip(names, map(float, forest.feature_importances_), strict=True)
        ),
        "test_rows": [int(i) for i in test],
        "evaluation": asdict(evaluation),
        "report": report.to_dict(),
    }
    buf = io.BytesIO()
    pickle.dump(model, buf, protocol=5)
    store.put_bytes(f"{out}/model.pkl", buf.getvalue())
    store.put_text(f"{out}/{CARD}", json.dumps(card, indent=1, sort_keys=True))
    return out


def read_card(store: ObjectStore, model: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads(store.get_text(f"{model}/{CARD}"))
    return card


def load_model(store: ObjectStore, model: str) -> Any:
    # The lake is written only by radflow's own stages; pickle is trusted within it.
    return pickle.loads(store.get_bytes(f"{model}/model.pkl"))


def champion(store: ObjectStore) -> str:
    if not store.exists(CHAMPION):
        raise NotFoundError(
            "no champion model", hint="run `radflow train` on labelled studies first"
        )
    return str(json.loads(store.get_text(CHAMPION))["model"])


def evaluation_of(card: dict[str, Any]) -> Evaluation:
    e = dict(card["evaluation"])
    e["roc"] = tuple(e["roc"])
    return Evaluation(**e)


def promote_if_better(store: ObjectStore, model: str) -> dict[str, Any]:
    """Make `model` the champion only if it beats the current one on the same held-out rows."""
    decided = f"{model}/{DECISION}"
    if store.exists(decided):  # decided once per model: a re-run repeats it, never re-decides
        stored: dict[str, Any] = json.loads(store.get_text(decided))
        return stored
    card = read_card(store, model)
    candidate_auc = float(card["evaluation"]["auc"])
    decision: dict[str, Any] = {"model": model, "model_id": card["model_id"], "auc": candidate_auc}
    try:
        current = champion(store)
    except NotFoundError:
        current = None
    if current == model:
        return _decided(
            store,
            model,
            {**decision, "promoted": True, "previous": None, "reason": "already the champion"},
        )
    if current is not None:
        current_card = read_card(store, current)
        rows = json.loads(store.get_text(card["dataset"]))["rows"]
        test = [rows[i] for i in card["test_rows"]]
        current_model = load_model(store, current)
        proba = current_model.predict_proba(_matrix(test, current_card["feature_names"]))[:, 1]
        current_auc = evaluate([int(r["label"]) for r in test], list(proba)).auc
        decision["previous"] = current
        decision["previous_auc"] = current_auc
        if not candidate_auc > current_auc:
            reason = (
                f"test AUC {candidate_auc:.3f} does not beat the champion's "
                f"{current_auc:.3f} on the same rows"
            )
            return _decided(store, model, {**decision, "promoted": False, "reason": reason})
        reason = (
            f"test AUC {candidate_auc:.3f} beats the champion's {current_auc:.3f} on the same rows"
        )
    else:
        decision["previous"] = None
        reason = "no champion yet"
    pointer = {"model": model, "model_id": card["model_id"], "auc": candidate_auc}
    store.put_text(CHAMPION, json.dumps(pointer, sort_keys=True))
    return _decided(store, model, {**decision, "promoted": True, "reason": reason})


def _decided(store: ObjectStore, model: str, decision: dict[str, Any]) -> dict[str, Any]:
    store.put_text(f"{model}/{DECISION}", json.dumps(decision, indent=1, sort_keys=True))
    return decision
