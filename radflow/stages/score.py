"""Score: one study's features and a model -> `scores/<v>/<hash>.json`."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from radflow.keys import address
from radflow.stages.features import read_features
from radflow.stages.train import load_model, read_card
from radflow.store import ObjectStore


def score_study(store: ObjectStore, features: str, model: str) -> str:
    out = address("scores", [features, model])
    if store.exists(out):
        return out
    card = read_card(store, model)
    row: dict[str, Any] = read_features(store, features)
    x = np.array([[float(row["features"][n]) for n in card["feature_names"]]])
    probability = float(load_model(store, model).predict_proba(x)[0, 1])
    threshold = float(card["evaluation"]["threshold"])
    result = {
        "study_id": row["study_id"],
        "features": features,
        "volume": row["volume"],
        "model": model,
        "model_id": card["model_id"],
        "probability": round(probability, 6),
        "threshold": threshold,
        "positive": probability >= threshold,
    }
    store.put_text(out, json.dumps(result, indent=1, sort_keys=True))
    return out


def read_score(store: ObjectStore, key: str) -> dict[str, Any]:
    score: dict[str, Any] = json.loads(store.get_text(key))
    return score
