"""Score: one study's features (and volume, for a CNN) and a model -> `scores/<v>/<hash>` (JSON)."""

from __future__ import annotations

from typing import Any

from radflow.config import Settings
from radflow.errors import QuarantineError
from radflow.keys import address as content_address
from radflow.lake import Lake
from radflow.lake.records import Score

NAME = "score"


def score_address(features: str, model: str) -> str:
    return content_address("scores", [features, model])


def address(settings: Settings, features: str, model: str) -> str:
    return score_address(features, model)


def run(lake: Lake, settings: Settings, features: str, model: str) -> str:
    return score_study(lake, features, model)


def _differences(mine: Any, theirs: Any, path: str = "") -> list[str]:
    """Names of the settings that differ (never their values: a value could be anything)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return [
            d
            for k in sorted(set(mine) | set(theirs))
            for d in _differences(mine.get(k), theirs.get(k), f"{path}.{k}" if path else k)
        ]
    return [] if mine == theirs else [path or "all"]


def score_study(lake: Lake, features: str, model: str) -> str:
    """The model's calibrated probability and call for one study. A study prepared with other
    preprocessing or extraction settings than the model's training rows is refused: its
    features would not mean what the model learned."""
    out = score_address(features, model)
    if lake.has(out):
        return out
    card = lake.card(model)
    row = lake.feature_row(features)
    qc = lake.qc(row.volume)
    differ = _differences(qc.preprocessing, card.preprocessing) + _differences(
        row.extraction, card.extraction
    )
    if differ:
        raise QuarantineError(
            f"prepared with other settings than model {card.model_id}",
            f"differs in: {', '.join(differ)}; re-ingest with the model's settings",
        )
    predictor = lake.model(model)
    inputs = lake.model_inputs([row], card.feature_names, predictor.needs_volumes)
    probability = float(predictor.predict_proba(inputs)[0, 1])
    threshold = card.evaluation.threshold
    score = Score(
        study_id=row.study_id,
        features=features,
        volume=row.volume,
        model=model,
        model_id=card.model_id,
        probability=round(probability, 6),
        threshold=threshold,
        positive=probability >= threshold,
        roi_source=qc.roi_source,
    )
    lake.put_score(out, score)
    return out
