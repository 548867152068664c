"""The model registry: `models/<v>/<hash>/` entries and the one mutable pointer, the champion.

An entry holds `model.pkl` (a `Predictor`), `metrics.json`, and `card.json` (written last: its
presence commits the entry). `decision.json` records, once, whether it became the champion.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np

from radflow.config import TrainSettings
from radflow.errors import NotFoundError
from radflow.models.metrics import Evaluation, evaluate
from radflow.models.predictor import Inputs, Predictor
from radflow.stages.volumes import read_image
from radflow.store import ObjectStore

CHAMPION = "models/champion.json"
CARD = "card.json"
DECISION = "decision.json"
METRICS = "metrics.json"
MODEL = "model.pkl"


def read_card(store: ObjectStore, model: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads(store.get_text(f"{model}/{CARD}"))
    return card


def load_model(store: ObjectStore, model: str) -> Predictor:
    # The lake is written only by radflow's own stages; pickle is trusted within it.
    predictor: Predictor = pickle.loads(store.get_bytes(f"{model}/{MODEL}"))
    return predictor


def champion(store: ObjectStore) -> str:
    if not store.exists(CHAMPION):
        raise NotFoundError(
            "no champion model", hint="run `radflow train` on labelled studies first"
        )
    return str(json.loads(store.get_text(CHAMPION))["model"])


def evaluation_of(card: dict[str, Any]) -> Evaluation:
    return Evaluation.from_dict(card["evaluation"])


def read_volume(store: ObjectStore, volume: str) -> np.ndarray:
    """A study's network input (`input.nii.gz`) as a float32 (D, H, W) array."""
    import SimpleITK as sitk

    image = read_image(store, f"{volume}/input.nii.gz")
    return np.asarray(sitk.GetArrayFromImage(image), dtype=np.float32)


def inputs_for(
    store: ObjectStore, rows: list[dict[str, Any]], names: list[str], volumes: bool
) -> Inputs:
    """Feature columns in `names` order, and the volumes when the model reads them."""
    x = np.array([[float(r["features"][n]) for n in names] for r in rows], dtype=np.float64)
    v = np.stack([read_volume(store, str(r["volume"])) for r in rows]) if volumes else None
    return Inputs(features=x.reshape(len(rows), len(names)), volumes=v)


def promote_if_better(store: ObjectStore, model: str, settings: TrainSettings) -> dict[str, Any]:
    """Make `model` the champion only if it passes its sanity checks and beats the current
    champion's AUC, on the same held-out rows, by at least the margin. Decided once per model:
    a re-run repeats the decision, never re-decides."""
    decided = f"{model}/{DECISION}"
    if store.exists(decided):
        stored: dict[str, Any] = json.loads(store.get_text(decided))
        return stored
    card = read_card(store, model)
    auc = float(card["evaluation"]["auc"])
    decision: dict[str, Any] = {
        "model": model,
        "model_id": card["model_id"],
        "auc": auc,
        "margin": settings.promotion_margin,
        "previous": None,
    }
    try:
        current: str | None = champion(store)
    except NotFoundError:
        current = None
    if current == model:
        return _decided(store, model, decision, True, "already the champion")
    failed = [name for name, ok in card["sanity"]["checks"].items() if not ok]
    if failed:
        return _decided(store, model, decision, False, f"fails sanity checks: {', '.join(failed)}")
    if current is None:
        return _promote(store, model, card, decision, "no champion yet")
    decision["previous"] = current
    previous = read_card(store, current)
    if (previous.get("preprocessing"), previous.get("extraction")) != (
        card["preprocessing"],
        card["extraction"],
    ):
        why = "the champion reads features prepared with other settings; it cannot be compared"
        return _promote(store, model, card, decision, why)
    rows = json.loads(store.get_text(card["dataset"]))["rows"]
    test = [rows[i] for i in card["split"]["test"]]
    champion_model = load_model(store, current)
    inputs = inputs_for(store, test, previous["feature_names"], champion_model.needs_volumes)
    proba = champion_model.predict_proba(inputs)[:, 1]
    previous_auc = evaluate([int(r["label"]) for r in test], list(proba)).auc
    decision["previous_auc"] = previous_auc
    gain = auc - previous_auc
    verdict = f"test AUC {auc:.3f} vs the champion's {previous_auc:.3f} on the same rows"
    if gain > 0 and gain >= settings.promotion_margin:
        return _promote(store, model, card, decision, f"{verdict}: better")
    shortfall = "not better" if gain <= 0 else f"better by less than {settings.promotion_margin}"
    return _decided(store, model, decision, False, f"{verdict}: {shortfall}")


def _promote(
    store: ObjectStore, model: str, card: dict[str, Any], decision: dict[str, Any], reason: str
) -> dict[str, Any]:
    pointer = {"model": model, "model_id": card["model_id"], "auc": decision["auc"]}
    store.put_text(CHAMPION, json.dumps(pointer, sort_keys=True))
    return _decided(store, model, decision, True, reason)


def _decided(
    store: ObjectStore, model: str, decision: dict[str, Any], promoted: bool, reason: str
) -> dict[str, Any]:
    final = {**decision, "promoted": promoted, "reason": reason}
    store.put_text(f"{model}/{DECISION}", json.dumps(final, indent=1, sort_keys=True))
    return final
