from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from radflow.keys import digest
from radflow.stages.registry import promote_if_better, read_card
from radflow.stages.train import (
    build_dataset,
    cnn_candidate_address,
    feature_candidates_address,
    fit_cnn_candidate,
    fit_feature_candidates,
    model_address,
    register_model,
)
from radflow.stages.volumes import preprocessing
from tasks._common import cache_key, lake, settings, task


def _expected() -> tuple[dict[str, Any], dict[str, Any]]:
    return preprocessing(settings().preprocess), settings().features.model_dump()


def _dataset_key(feature_keys: list[str | None]) -> str:
    # The dataset also depends on the labels: the key covers their objects' sizes and ETags.
    labels = [f"{o.key}:{o.etag}" for o in lake().list("labels/")]
    keys = sorted(k for k in feature_keys if k)
    return digest(keys, {"labels": labels, "expected": list(_expected())})


@task(
    cache_key_fn=cache_key("datasets", _dataset_key), task_run_name="dataset", tags=["stage:train"]
)
def dataset(feature_keys: list[str | None]) -> str:
    return build_dataset(lake(), [k for k in feature_keys if k], *_expected())


@task(
    cache_key_fn=cache_key(
        "candidates", lambda dataset: feature_candidates_address(dataset, settings().train)
    ),
    task_run_name="fit-feature-models",
    tags=["stage:train"],
)
def feature_candidates(dataset: str) -> str:
    return fit_feature_candidates(lake(), dataset, settings().train)


@task(
    cache_key_fn=cache_key(
        "candidates", lambda dataset: cnn_candidate_address(dataset, settings().train)
    ),
    task_run_name="fit-cnn",
    tags=["stage:train", "gpu"],
)
def cnn_candidate(dataset: str) -> str:
    """Checkpoints go to the worker's cache folder: a killed run resumes on the same worker."""
    return fit_cnn_candidate(
        lake(), dataset, settings().train, checkpoints=settings().cache_dir / "checkpoints"
    )


@task(
    cache_key_fn=cache_key(
        "models", lambda dataset, candidates: model_address(dataset, candidates, settings().train)
    ),
    task_run_name="register",
    tags=["stage:train"],
)
def register(dataset: str, candidates: list[str]) -> str:
    model = register_model(lake(), dataset, candidates, settings().train)
    card = read_card(lake(), model)
    create_table_artifact(
        key="radflow-candidates",
        table=card["comparison"],
        description=f"Model {card['model_id']}: candidates on validation and test patients",
    )
    return model


@task(
    cache_key_fn=cache_key("promote", lambda model: f"{model}/decision"),
    task_run_name="promote",
    tags=["stage:train"],
)
def promote(model: str) -> dict[str, Any]:
    decision = promote_if_better(lake(), model, settings().train)
    previous = (
        f"champion {decision['previous']}: test AUC {decision['previous_auc']:.3f} on the same rows"
        if "previous_auc" in decision
        else "no comparable champion"
    )
    create_markdown_artifact(
        key="radflow-promotion",
        markdown=(
            f"**{decision['model_id']}**: test AUC {decision['auc']:.3f}; {previous}; "
            f"margin {decision['margin']}.\n\n"
            f"**{'Promoted' if decision['promoted'] else 'Not promoted'}**: {decision['reason']}"
        ),
    )
    return decision
