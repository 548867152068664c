"""Score: one study's features (and volume, for a CNN) and a model -> `scores/<v>/<hash>.json`."""

from __future__ import annotations

import json
from typing import Any

from radflow.errors import QuarantineError
from radflow.keys import address
from radflow.stages.features import read_features, read_qc
from radflow.stages.registry import inputs_for, load_model, read_card
from radflow.store import ObjectStore


def _differences(mine: Any, theirs: Any, path: str = "") -> list[str]:
    """Names of the settings that differ (never their values: a value could be anything)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return [
            d
            for k in sorted(set(mine) | set(theirs))
            for d in _differences(mine.get(k), theirs.get(k), f"{path}.{k}" if path else k)
        ]
    return [] if mine == theirs else [path or "all"]


def score_study(store: ObjectStore, features: str, model: str) -> str:
    """The model's calibrated probability and call for one study. A study prepared with other
    preprocessing or extraction settings than the model's training rows is refused: its
    features would not mean what the model learned."""
    out = address("scores", [features, model])
    if store.exists(out):
        return out
    card = read_card(store, model)
    row: dict[str, Any] = read_features(store, features)
    qc = read_qc(store, str(row["volume"]))
    differ = _differences(qc.get("preprocessing"), card["preprocessing"]) + _differences(
        row.get("extraction"), card["extraction"]
    )
    if differ:
        raise QuarantineError(
            f"prepared with other settings than model {card['model_id']}",
            f"differs in: {', '.join(differ)}; re-ingest with the model's settings",
        )
    predictor = load_model(store, model)
    inputs = inputs_for(store, [row], card["feature_names"], predictor.needs_volumes)
    probability = float(predictor.predict_proba(inputs)[0, 1])
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
