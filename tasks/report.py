from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from radflow.keys import address
from radflow.stages.report import write_model_report, write_study_report
from tasks._common import cache_key, lake, run_name


@task(
    cache_key_fn=cache_key(
        "reports", lambda score: f"{address('reports', [str(score)])}/study.html"
    ),
    task_run_name=run_name("report"),
)
def study_report(score: str | None) -> str | None:
    return None if score is None else write_study_report(lake(), score)


@task(task_run_name="model-report")
def model_report(model: str, decision: dict[str, Any]) -> str:
    key = write_model_report(lake(), model, decision)
    create_markdown_artifact(
        key="radflow-model-report",
        markdown=(
            f"**Model {decision['model_id']}**: test AUC {decision['auc']:.3f}; "
            f"{'promoted' if decision['promoted'] else 'not promoted'} ({decision['reason']}).\n\n"
            f"Report: `{lake().url}{key}`"
        ),
    )
    return key
