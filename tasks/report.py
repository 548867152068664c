"""Write each scored study's reports, and a trained model's report."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from radflow.keys import short_id
from radflow.lake.records import Decision
from radflow.stages import report as report_stage
from radflow.stages.report import write_model_report
from tasks.runtime import lake, task
from tasks.stage_task import stage_task


def _link(html: str, score_key: str) -> None:
    """The study's reports, linked from its run as an artifact."""
    folder = html.rsplit("/", 1)[0]
    score = lake().score(score_key)
    create_markdown_artifact(
        key=f"radflow-report-{short_id(score.study_id)}",
        markdown=(
            f"**Study {score.study_id}**: score {score.probability:.3f} "
            f"(threshold {score.threshold:.3f}, "
            f"{'positive' if score.positive else 'negative'}), "
            f"model {score.model_id}.\n\n"
            f"Reports in `{lake().url}{folder}/`: `study.html`, `study.pdf`, "
            f"`sr.dcm` (DICOM SR), `report-pdf.dcm` (Encapsulated PDF), "
            f"`seg.dcm` (DICOM SEG of the ROI)."
        ),
        description="radflow study report (research use only)",
    )


study_report = stage_task(report_stage, after=_link)


@task(task_run_name="model-report", tags=["stage:train"])
def model_report(model: str, decision: Decision, segmentation: str = "") -> str:
    key = write_model_report(lake(), model, decision, segmentation)
    create_markdown_artifact(
        key="radflow-model-report",
        markdown=(
            f"**Model {decision.model_id}**: test AUC {decision.auc:.3f}; "
            f"{'promoted' if decision.promoted else 'not promoted'} ({decision.reason}).\n\n"
            f"Report: `{lake().url}{key}`"
        ),
    )
    return key
