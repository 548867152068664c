"""Register each study's series and preprocess its primary series."""

from __future__ import annotations

from radflow.stages import preprocess as preprocess_stage
from tasks.runtime import lake, settings, task
from tasks.stage_task import stage_task

preprocess = stage_task(preprocess_stage)


@task(task_run_name="roi-model", tags=["stage:preprocess"])
def roi_model() -> str:
    """The segmentation champion a study without a usable annotation takes its ROI from ("":
    none, or `model` is not among the ROI sources). Read once per delivery, so every study of
    it uses the same model."""
    if "model" not in settings().preprocess.roi_sources:
        return ""
    return lake().segmentation_champion() or ""
