"""Demo: synthesize -> ingest (labelled) -> train -> score new studies -> reports, in one
process, so Prefect's temporary server starts once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.ingest import ingest
from flows.score import score_flow
from flows.train import train_flow
from radflow.demo import NEW_DELIVERY, TRAIN_DELIVERY, DemoLayout, ensure_inbox


@task(task_run_name="synthesize")
def synthesize(workdir: str, studies: int, seed: int) -> str:
    """The demo inbox (written once per spec); returns its store URL."""
    layout = DemoLayout(Path(workdir))
    ensure_inbox(layout, studies, seed)
    return layout.inbox.resolve().as_uri()


@flow(name="demo", flow_run_name="demo")
def demo(workdir: str, studies: int = 40, seed: int = 0) -> dict[str, Any]:
    layout = DemoLayout(Path(workdir))
    inbox = synthesize(workdir, studies, seed)
    keys = ingest(inbox, TRAIN_DELIVERY, labels=str(layout.train_labels))
    trained = train_flow(keys)
    reports = score_flow(inbox, NEW_DELIVERY)
    return {**trained, "study_reports": reports}
