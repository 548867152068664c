"""Train: the dataset, the candidates, the registry entry and the promotion decision (the
segmentation model's tasks: tasks/segmentation.py)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from radflow.lake.records import Decision
from radflow.stages import dataset as dataset_stage
from radflow.stages.candidates import (
    cnn_candidate_address,
    feature_candidates_address,
    fit_cnn_candidate,
    fit_feature_candidates,
)
from radflow.stages.registry import model_address, promote_if_better, register_model
from radflow.train_result import train_result
from tasks.runtime import gpu_task, lake, settings, task
from tasks.stage_task import LakeAddress


def _rows(feature_keys: list[str | None]) -> list[str]:
    return [k for k in feature_keys if k]


@task(
    cache_policy=LakeAddress(
        name="dataset",
        address=lambda feature_keys: dataset_stage.address(lake(), settings(), _rows(feature_keys)),
    ),
    task_run_name="dataset",
    tags=["stage:train"],
)
def dataset(feature_keys: list[str | None]) -> str:
    key = dataset_stage.run(lake(), settings(), _rows(feature_keys))
    get_run_logger().info(lake().dataset(key).summary().line())
    return key


@task(
    cache_policy=LakeAddress(
        name="candidates",
        address=lambda dataset: feature_candidates_address(dataset, settings().train),
    ),
    task_run_name="fit-feature-models",
    tags=["stage:train"],
)
def feature_candidates(dataset: str) -> str:
    return fit_feature_candidates(lake(), dataset, settings().train)


@gpu_task("fit-cnn-on-gpu")
def fit_cnn(dataset: str) -> str:
    """Checkpoints go to the worker's cache folder: a killed run resumes on the same worker."""
    return fit_cnn_candidate(
        lake(), dataset, settings().train, checkpoints=settings().cache_dir / "checkpoints"
    )


@task(
    cache_policy=LakeAddress(
        name="candidates", address=lambda dataset: cnn_candidate_address(dataset, settings().train)
    ),
    task_run_name="fit-cnn",
    tags=["stage:train"],
)
def cnn_candidate(dataset: str) -> str:
    """Cached, it returns at once; only the fit itself waits for a `gpu` slot."""
    return fit_cnn(dataset)


@task(
    cache_policy=LakeAddress(
        name="models",
        address=lambda dataset, candidates: model_address(dataset, candidates, settings().train),
    ),
    task_run_name="register",
    tags=["stage:train"],
)
def register(dataset: str, candidates: list[str]) -> str:
    model = register_model(lake(), dataset, candidates, settings().train)
    card = lake().card(model)
    create_table_artifact(
        key="radflow-candidates",
        table=[row.model_dump() for row in card.comparison],
        description=f"Model {card.model_id}: candidates on validation and test patients",
    )
    return model


@task(
    cache_policy=LakeAddress(name="promote", address=lambda model: f"{model}/decision"),
    task_run_name="promote",
    tags=["stage:train"],
)
def promote(model: str) -> Decision:
    decision = promote_if_better(lake(), model, settings().train)
    create_markdown_artifact(key="radflow-promotion", markdown=decision.markdown())
    return decision


@task(task_run_name="trained", tags=["stage:train"])
def trained(model: str, decision: Decision, report: str, segmentation: str = "") -> dict[str, Any]:
    """What `radflow train --json` prints (radflow/train_result.py)."""
    result = train_result(
        lake(), model, decision, report, segmentation, settings().train.segmentation.enabled
    )
    get_run_logger().info(
        "model %s: test AUC %.3f, %s", result["model_id"], decision.auc, decision.reason
    )
    return result
