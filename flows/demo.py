"""Demo: synthesize -> ingest (labelled) -> train -> score new studies -> reports.

One flow run composing the other flows' steps (not subflows): one process, one start of
Prefect's temporary server, and no subflow bookkeeping on a busy SQLite database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.ingest import ingest_steps
from flows.score import score_steps
from flows.train import train_steps
from radflow.demo import (
    NEW_DELIVERY,
    TRAIN_DELIVERY,
    DemoLayout,
    ensure_inbox,
    roi_sources,
    scored_roi_sources,
    split,
)
from tasks.runtime import lake


@task(task_run_name="synthesize")
def synthesize(workdir: str, studies: int, seed: int) -> str:
    """The demo inbox (written once per spec); returns its store URL."""
    layout = DemoLayout(Path(workdir))
    ensure_inbox(layout, studies, seed)
    return layout.inbox.resolve().as_uri()


@task(task_run_name="roi-sources")
def count_roi_sources(feature_keys: list[str]) -> dict[str, int]:
    """Studies per ROI source, for the demo's last words."""
    return roi_sources(lake(), feature_keys)


@task(task_run_name="scored-roi-sources")
def count_scored_roi_sources() -> dict[str, int]:
    """Scored studies per ROI source: the new studies' come from the segmentation model."""
    return scored_roi_sources(lake())


@flow(name="demo", flow_run_name="demo")
def demo(workdir: str, studies: int = 40, seed: int = 0) -> dict[str, Any]:
    layout = DemoLayout(Path(workdir))
    inbox = synthesize(workdir, studies, seed)
    # The labelled delivery trains on its annotations (and the demo's rule), never on a
    # segmentation champion's ROIs: a rerun then finds every study, dataset and model as it
    # left them (the champion is an input of the volumes it makes) and is all Cached.
    keys = ingest_steps(inbox, TRAIN_DELIVERY, labels=str(layout.train_labels), segmentation=False)
    trained = train_steps(keys)
    reports = score_steps(inbox, NEW_DELIVERY)
    n_train, n_new = split(studies)
    return {
        **trained,
        "study_reports": reports,
        "new_studies": n_new,
        "train_studies": n_train,
        "roi_sources": count_roi_sources(keys),
        "new_roi_sources": count_scored_roi_sources(),
    }
