"""Train: every labelled feature row -> candidates -> a registered model, promoted only if
better, and its report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger

from flows.arrival import announce_arrival
from radflow.stages.catalog import current_features
from radflow.stages.pending import pending_arrivals
from radflow.stages.registry import METRICS, read_card
from radflow.stages.train import labels_summary, read_dataset
from tasks._common import connect_tag_checks, lake, settings
from tasks.report import model_report
from tasks.train import cnn_candidate, dataset, feature_candidates, promote, register


def train_steps(feature_keys: Sequence[str | None]) -> dict[str, Any]:
    """dataset -> candidates (feature models, CNN) -> register -> promote -> model report
    (a step list the demo flow reuses). Returns what `radflow train --json` prints."""
    connect_tag_checks(dataset, cnn_candidate)
    data = dataset(list(feature_keys))
    labels = labels_summary(read_dataset(lake(), data))
    log = get_run_logger()
    log.info(
        "%(labelled_studies)d labelled studies; %(unlabelled_studies)d without a label, "
        "%(labels_without_study)d labels without a study, %(stale_studies)d prepared with "
        "other settings",
        labels,
    )
    chosen = settings().train.candidates
    fits = [feature_candidates.submit(data)] if set(chosen) - {"cnn"} else []
    if "cnn" in chosen:
        fits.append(cnn_candidate.submit(data))
    model = register(data, [f.result() for f in fits])
    decision = promote(model)
    report = model_report(model, decision)
    card = read_card(lake(), model)
    log.info("model %s: test AUC %.3f, %s", card["model_id"], decision["auc"], decision["reason"])
    if decision["promoted"]:
        # Deliveries that arrived while there was no champion: announce them again.
        for waiting in pending_arrivals(lake()):
            announce_arrival(
                lake(), waiting["source"], waiting["prefix"], waiting["depth"], waiting["arrival"]
            )
    return {
        "model": model,
        "model_id": card["model_id"],
        "kind": card["kind"],
        "promoted": decision["promoted"],
        "reason": decision["reason"],
        "previous": decision["previous"],
        "metrics": json.loads(lake().get_text(f"{model}/{METRICS}"))["held_out"],
        "labels": labels,
        "report": report,
    }


@flow(name="train", flow_run_name="train")
def train_flow(feature_keys: list[str] | None = None) -> dict[str, Any]:
    """On `feature_keys`, or on every study's current row in the catalog."""
    return train_steps(current_features(lake()) if feature_keys is None else feature_keys)
