"""Train: every labelled feature row -> a model, promoted only if better, and its report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger

from radflow.stages.catalog import current_features
from tasks._common import lake
from tasks.report import model_report
from tasks.train import dataset, promote, train


def train_steps(feature_keys: Sequence[str | None]) -> dict[str, Any]:
    """dataset -> train -> promote -> model report (a step list the demo flow reuses)."""
    model = train(dataset(list(feature_keys)))
    decision = promote(model)
    report = model_report(model, decision)
    get_run_logger().info(
        "model %s: test AUC %.3f, %s", decision["model_id"], decision["auc"], decision["reason"]
    )
    return {"model": model, "decision": decision, "report": report}


@flow(name="train", flow_run_name="train")
def train_flow(feature_keys: list[str] | None = None) -> dict[str, Any]:
    """On `feature_keys`, or on every study's current row in the catalog."""
    return train_steps(current_features(lake()) if feature_keys is None else feature_keys)
