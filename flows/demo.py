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
    keys = ingest_steps(inbox, TRAIN_DELIVERY, labels=str(layout.train_labels))
    trained = train_steps(keys)
    reports = score_steps(inbox, NEW_DELIVERY)
    return {**trained, "study_reports": reports}
