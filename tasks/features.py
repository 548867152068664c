"""Extract each study's feature row."""

from __future__ import annotations

from radflow.stages import features as features_stage
from tasks.stage_task import stage_task

features = stage_task(features_stage)
