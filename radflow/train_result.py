"""What `radflow train --json` prints, read back from the lake: the classifier, its decision,
held-out metrics and labels, and the segmentation model trained beside it."""

from __future__ import annotations

from typing import Any

from radflow.lake import Lake
from radflow.lake.records import Decision
from radflow.stages.segmentation import MIN_FIT_STUDIES

#: Why a training run has no segmentation model (the stage returned "").
NOT_TRAINED = f"not trained: fewer than {MIN_FIT_STUDIES} annotated studies among the fit patients"


def segmentation_result(
    lake: Lake, segmentation: str, model: str, enabled: bool
) -> dict[str, Any] | None:
    """The segmentation model's part of the result; None when none is configured."""
    if not enabled:
        return None
    if not segmentation:
        return {"model": None, "promoted": False, "reason": NOT_TRAINED}
    card = lake.segmentation_card(segmentation)
    decision = lake.segmentation_decision(segmentation)
    champion = lake.segmentation_champion()
    roi = lake.roi_evaluation(model, champion) if champion else None
    return {
        "model": segmentation,
        "model_id": card.model_id,
        "promoted": decision.promoted if decision else False,
        "reason": decision.reason if decision else "",
        "previous": decision.previous if decision else None,
        "champion": champion,
        "metrics": card.evaluation.model_dump(mode="json", exclude={"cases"}),
        "training": card.training.model_dump(mode="json", exclude={"history"}),
        "classifier_on_model_rois": roi.model_dump(mode="json") if roi else None,
    }


def train_result(
    lake: Lake,
    model: str,
    decision: Decision,
    report: str,
    segmentation: str,
    segmentation_enabled: bool,
) -> dict[str, Any]:
    card, metrics = lake.card(model), lake.metrics(model)
    return {
        "model": model,
        "model_id": card.model_id,
        "kind": card.kind,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "previous": decision.previous,
        "metrics": metrics.held_out.model_dump(mode="json"),
        "labels": card.labels.model_dump(),
        "report": report,
        "segmentation": segmentation_result(lake, segmentation, model, segmentation_enabled),
    }
