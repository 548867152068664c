"""Train: every labelled feature row -> candidates -> a registered model, promoted only if
better, and its report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.runtime.tag_checks import connect_tag_checks
from radflow import progress
from tasks.arrival import announce_waiting
from tasks.catalog import current_rows
from tasks.report import model_report
from tasks.runtime import settings
from tasks.segmentation import (
    model_roi_evaluation,
    promote_segmenter,
    segmentation_candidate,
    segmentation_champion,
)
from tasks.train import cnn_candidate, dataset, feature_candidates, promote, register, trained


def train_steps(feature_keys: Sequence[str | None]) -> dict[str, Any]:
    """dataset -> candidates (feature models, CNN) and the segmentation model -> register ->
    promote both -> the classifier on the segmentation champion's ROIs -> model report (a
    step list the demo flow reuses). Returns what `radflow train --json` prints."""
    connect_tag_checks(dataset, cnn_candidate, segmentation_candidate)
    progress.step("dataset", 0, 5)
    data = dataset(list(feature_keys))
    chosen = settings().train.candidates
    progress.step("candidates", 1, 5)
    segmenting = (
        segmentation_candidate.submit(data) if settings().train.segmentation.enabled else None
    )
    fits = [feature_candidates.submit(data)] if set(chosen) - {"cnn"} else []
    if "cnn" in chosen:
        fits.append(cnn_candidate.submit(data))
    results = [f.result() for f in fits]
    progress.step("register", 2, 5)
    model = register(data, results)
    segmentation = segmenting.result() if segmenting is not None else ""
    progress.step("promote", 3, 5)
    decision = promote(model)
    if segmentation:
        promote_segmenter(segmentation)
        if champion := segmentation_champion():
            model_roi_evaluation(model, champion)
    progress.step("model report", 4, 5)
    report = model_report(model, decision, segmentation)
    progress.step("done", 5, 5)
    if decision.promoted:
        announce_waiting()  # deliveries that arrived while there was no champion
    return trained(model, decision, report, segmentation)


@flow(name="train", flow_run_name="train")
def train_flow(feature_keys: list[str] | None = None) -> dict[str, Any]:
    """On `feature_keys`, or on every study's current row in the catalog."""
    return train_steps(current_rows() if feature_keys is None else feature_keys)
