from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact

from radflow.keys import short_id
from radflow.stages.report import study_report_address, write_model_report, write_study_report
from radflow.stages.score import read_score
from tasks._common import cache_key, lake, run_name, task


@task(
    cache_key_fn=cache_key("reports", lambda score: study_report_address(str(score))),
    task_run_name=run_name("report"),
    tags=["stage:report"],
)
def study_report(score: str | None) -> str | None:
    """The study's HTML, PDF and DICOM reports, linked from the run as an artifact."""
    if score is None:
        return None
    key = write_study_report(lake(), score)
    result = read_score(lake(), score)
    folder = key.rsplit("/", 1)[0]
    create_markdown_artifact(
        key=f"radflow-report-{short_id(str(result['study_id']))}",
        markdown=(
            f"**Study {result['study_id']}**: score {result['probability']:.3f} "
            f"(threshold {result['threshold']:.3f}, "
            f"{'positive' if result['positive'] else 'negative'}), "
            f"model {result['model_id']}.\n\n"
            f"Reports in `{lake().url}{folder}/`: `study.html`, `study.pdf`, "
            f"`sr.dcm` (DICOM SR), `report-pdf.dcm` (Encapsulated PDF)."
        ),
        description="radflow study report (research use only)",
    )
    return key


@task(task_run_name="model-report", tags=["stage:train"])
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
