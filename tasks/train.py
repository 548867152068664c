from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task

from radflow.keys import address, digest
from radflow.models.train import TrainParams
from radflow.stages.train import build_dataset, promote_if_better, train_model
from tasks._common import cache_key, lake, settings


def _dataset_key(feature_keys: list[str | None]) -> str:
    # The dataset also depends on the labels: the key covers their objects' sizes and ETags.
    labels = [f"{o.key}:{o.etag}" for o in lake().list("labels/")]
    return digest(sorted(k for k in feature_keys if k), {"labels": labels})


@task(cache_key_fn=cache_key("datasets", _dataset_key), task_run_name="dataset")
def dataset(feature_keys: list[str | None]) -> str:
    return build_dataset(lake(), [k for k in feature_keys if k])


def _model_key(dataset: str) -> str:
    return address("models", [dataset], asdict(TrainParams(**settings().train.model_dump())))


@task(cache_key_fn=cache_key("models", _model_key), task_run_name="train")
def train(dataset: str) -> str:
    return train_model(lake(), dataset, settings().train)


@task(cache_key_fn=cache_key("promote", lambda model: f"{model}/decision"), task_run_name="promote")
def promote(model: str) -> dict[str, Any]:
    return promote_if_better(lake(), model)
