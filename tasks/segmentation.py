"""The segmentation model's tasks in the train flow: training, promotion, and the classifier
evaluated on the segmentation champion's ROIs."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from radflow.lake import Lake
from radflow.lake.records import SegmentationDecision
from radflow.stages.segmentation import (
    evaluate_with_model_rois,
    promote_segmentation,
    segmentation_address,
    train_segmentation_model,
)
from tasks.runtime import gpu_task, lake, settings, task
from tasks.stage_task import LakeAddress


@gpu_task("fit-segmentation-on-gpu")
def fit_segmentation(dataset: str) -> str:
    """The segmentation model on the dataset's annotated studies ("" when too few); its
    checkpoints, like the CNN's, in the worker's cache folder."""
    return train_segmentation_model(
        lake(), dataset, settings().train, checkpoints=settings().cache_dir / "checkpoints"
    )


@task(
    cache_policy=LakeAddress(
        name="segmentations",
        address=lambda dataset: segmentation_address(dataset, settings().train),
    ),
    task_run_name="fit-segmentation",
    tags=["stage:train"],
)
def segmentation_candidate(dataset: str) -> str:
    """Cached, it returns at once; only the training waits for a `gpu` slot."""
    return fit_segmentation(dataset)


@task(
    cache_policy=LakeAddress(
        name="segmentation-decision", address=lambda model: f"{model}/decision"
    ),
    task_run_name="promote-segmentation",
    tags=["stage:train"],
)
def promote_segmenter(model: str) -> SegmentationDecision:
    decision = promote_segmentation(lake(), model, settings().train.segmentation)
    create_markdown_artifact(key="radflow-segmentation-promotion", markdown=decision.markdown())
    return decision


@task(task_run_name="segmentation-champion", tags=["stage:train"])
def segmentation_champion() -> str:
    """The segmentation champion's address ("" before the first)."""
    return lake().segmentation_champion() or ""


@task(
    cache_policy=LakeAddress(
        name="roi-evaluation",
        address=lambda model, segmentation: Lake.roi_evaluation_key(model, segmentation),
    ),
    task_run_name="classifier-on-model-rois",
    tags=["stage:train"],
)
def model_roi_evaluation(model: str, segmentation: str) -> str:
    """The classifier on its annotated test studies with the segmentation champion's ROIs,
    next to their annotation ROIs: the path a new study takes."""
    found = evaluate_with_model_rois(lake(), model, segmentation, settings())
    get_run_logger().info(found.line())
    return Lake.roi_evaluation_key(model, segmentation)
