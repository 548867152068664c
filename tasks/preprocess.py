"""Register each study's series and preprocess its primary series."""

from __future__ import annotations

from radflow.stages import preprocess as preprocess_stage
from tasks.stage_task import stage_task

preprocess = stage_task(preprocess_stage)
