"""The segmentation model: the annotated studies of a dataset -> a registered model,
`segmentations/<v>/<hash>/`, promoted only when it beats the champion; and the classifier
evaluated on the ROIs the champion finds.

The split is the classifier's (`training_table`): the same patients are held out for both
models, so the test Dice and the classifier's test AUC are measured on the same people. Only
studies whose ROI came from their own annotation (they keep `whole.nii.gz` and
`whole_mask.nii.gz`) take part.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from radflow.config import Settings, TrainSettings
from radflow.errors import RadflowError
from radflow.keys import address as content_address
from radflow.keys import canonical_json, sha256_bytes, short_id
from radflow.lake import Lake
from radflow.lake.records import (
    CaseResult,
    CodeVersion,
    DatasetRow,
    Estimate,
    RoiEvaluation,
    SegmentationCard,
    SegmentationChampion,
    SegmentationDecision,
    SegmentationEpoch,
    SegmentationEvaluation,
    SegmentationSplit,
    SegmentationTraining,
)
from radflow.models.table import Table, training_table
from radflow.segmentation.params import SegmentationParams

if TYPE_CHECKING:
    from radflow.segmentation.metrics import MetricSummary
    from radflow.segmentation.patches import Case

log = logging.getLogger("radflow.segmentation")

NAME = "segmentation"
#: Surface Dice counts boundary voxels within this distance of the other boundary.
TOLERANCE_MM = 2.0
#: Fewer annotated studies to fit on than this is not a model anyone should use.
MIN_FIT_STUDIES = 4
#: The share of test studies in which the model must find a region.
MIN_NON_EMPTY_RATE = 0.8
#: The overlay images show this square around the annotation: a lesion of a few cm is
#: visible, not a dot in a whole chest.
OVERLAY_FIELD_MM = 96.0


def _params_for_address(params: SegmentationParams) -> dict[str, object]:
    # How many processes or which device train it does not change what it learns (DDP is
    # exact within float tolerance); the promotion margin decides later, not the model.
    return params.model_dump(mode="json", exclude={"processes", "device", "promotion_margin"})


def segmentation_address(dataset: str, settings: TrainSettings) -> str:
    return content_address(
        "segmentations",
        [dataset],
        {
            **settings.model_dump(include={"seed", "test_fraction", "validation_fraction"}),
            "segmentation": _params_for_address(settings.segmentation),
        },
    )


def annotated(row: DatasetRow) -> bool:
    return row.roi_source.startswith("annotation")


def _part(table: Table, indices: Iterable[int]) -> list[DatasetRow]:
    return [table.rows[int(i)] for i in indices if annotated(table.rows[int(i)])]


def annotated_split(
    lake: Lake, dataset: str, settings: TrainSettings
) -> tuple[list[DatasetRow], list[DatasetRow], list[DatasetRow]]:
    """The annotated studies of the classifier's fit, validation and test patients."""
    table = training_table(lake.dataset(dataset), settings)
    split = table.split
    return _part(table, split.fit), _part(table, split.validation), _part(table, split.test)


def cases(lake: Lake, rows: Sequence[DatasetRow], params: SegmentationParams) -> list[Case]:
    """`rows`' whole images, windowed for the network, with their annotations."""
    from radflow.segmentation.network import window
    from radflow.segmentation.patches import Case

    found = []
    for row in rows:
        image, mask = _whole(lake, row)
        found.append(Case(row.volume, window(_array(image), params), _array(mask)))
    return found


def _whole(lake: Lake, row: DatasetRow) -> tuple[sitk.Image, sitk.Image]:
    return lake.image(row.volume, "whole"), lake.image(row.volume, "whole_mask")


def _array(image: sitk.Image) -> np.ndarray:
    found: np.ndarray = sitk.GetArrayFromImage(image)
    return found


def train_segmentation_model(
    lake: Lake, dataset: str, settings: TrainSettings, checkpoints: Path | None = None
) -> str:
    """Fit on the fit patients' annotated studies, stop early on the validation patients',
    evaluate on the test patients'; "" when the dataset has too few annotated studies to fit
    on (the classifier trains regardless). With `checkpoints` a killed training resumes."""
    import torch

    from radflow.segmentation.params import data_parallel_processes
    from radflow.segmentation.train import train_segmentation

    out = segmentation_address(dataset, settings)
    if lake.has(out):
        return out
    params = settings.segmentation
    fit, validation, test = annotated_split(lake, dataset, settings)
    if len(fit) < MIN_FIT_STUDIES:
        log.warning(
            "segmentation model not trained: %d annotated studies among the fit patients, need %d",
            len(fit),
            MIN_FIT_STUDIES,
        )
        return ""

    fit_cases = cases(lake, fit, params)
    spacing = tuple(float(s) for s in lake.image(fit[0].volume, "whole").GetSpacing())
    processes = data_parallel_processes(params, torch.cuda.device_count())
    trained = train_segmentation(
        fit_cases,
        cases(lake, validation, params),
        params,
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        seed=settings.seed,
        checkpoint_dir=checkpoints / short_id(out) if checkpoints else None,
        processes=processes,
    )
    evaluation, overlays = evaluate_segmentation(lake, trained.model, test, params)
    weights = trained.model.to_bytes()
    card = SegmentationCard(
        model_id=f"seg-{short_id(out)}",
        address=out,
        dataset=dataset,
        params=params.model_dump(mode="json"),
        spacing_mm=trained.model.spacing_mm,
        preprocessing=lake.qc(fit[0].volume).preprocessing,
        fingerprint=sha256_bytes(
            canonical_json({"weights": sha256_bytes(weights), "fit": [r.volume for r in fit]})
        ),
        code_version=CodeVersion.of_this_code(),
        split=SegmentationSplit(
            fit=[r.volume for r in fit],
            validation=[r.volume for r in validation],
            test=[r.volume for r in test],
            test_studies=[r.study_id for r in test],
        ),
        training=SegmentationTraining(
            device=trained.device,
            processes=processes,
            best_epoch=trained.best_epoch,
            epochs_run=trained.epochs_run,
            resumed_from_epoch=trained.resumed_from_epoch,
            history=[
                SegmentationEpoch(
                    epoch=epoch,
                    train_loss=round(float(loss), 6),
                    val_dice=None if dice is None else round(float(dice), 6),
                )
                for epoch, loss, dice in trained.history
            ],
        ),
        evaluation=evaluation,
        sanity={
            f"fitted on at least {MIN_FIT_STUDIES} annotated studies": len(fit) >= MIN_FIT_STUDIES,
            "has annotated test studies": evaluation.n_cases > 0,
            f"finds a region in at least {MIN_NON_EMPTY_RATE:.0%} of test studies": (
                evaluation.n_cases > 0 and evaluation.non_empty_rate >= MIN_NON_EMPTY_RATE
            ),
            "test Dice above 0": (evaluation.dice.mean or 0.0) > 0,
        },
    )
    lake.put_segmentation(out, weights, overlays, card)
    return out


def _masks(lake: Lake, model: object, rows: Sequence[DatasetRow]) -> list[np.ndarray]:
    """The model's post-processed masks of `rows`' whole images (empty where it finds
    nothing plausible: that is what a study would be quarantined for)."""
    from radflow.segmentation.infer import segment_image

    found = []
    for row in rows:
        image = lake.image(row.volume, "whole")
        result = segment_image(model, image)  # type: ignore[arg-type]
        mask = _array(result.mask).astype(bool)
        found.append(mask if result.problem is None else np.zeros_like(mask))
    return found


def _estimate(value: MetricSummary) -> Estimate:
    return Estimate(mean=value.mean, ci=value.ci)


def evaluate_segmentation(
    lake: Lake, model: object, rows: list[DatasetRow], params: SegmentationParams
) -> tuple[SegmentationEvaluation, dict[str, bytes]]:
    """`model`'s post-processed masks of `rows` (as scoring makes them) against their
    annotations: the metrics with patient-level CIs, and an overlay PNG per study."""
    from radflow.reports.overlays import overlay_png
    from radflow.segmentation.metrics import case_metrics, summarise

    results, overlays, metrics = [], {}, []
    for row, predicted in zip(rows, _masks(lake, model, rows), strict=True):
        image, mask = _whole(lake, row)
        truth = _array(mask).astype(bool)
        spacing_zyx = tuple(float(s) for s in reversed(image.GetSpacing()))
        found = case_metrics(truth, predicted, spacing_zyx, tolerance_mm=TOLERANCE_MM)  # type: ignore[arg-type]
        metrics.append(found)
        results.append(
            CaseResult(
                study_id=row.study_id,
                patient_id=row.patient_id,
                volume=row.volume,
                **found.model_dump(exclude={"tolerance_mm"}),
            )
        )
        lo = params.window_level - params.window_width / 2
        overlays[row.study_id] = overlay_png(
            _array(image),
            truth,
            predicted,
            window=(lo, lo + params.window_width),
            spacing_mm=spacing_zyx,  # type: ignore[arg-type]
            field_mm=OVERLAY_FIELD_MM,
        )
    summary = summarise(metrics, [r.patient_id for r in rows]) if rows else None
    empty = Estimate(mean=None, ci=None)
    return (
        SegmentationEvaluation(
            tolerance_mm=TOLERANCE_MM,
            n_cases=len(rows),
            n_patients=len({r.patient_id for r in rows}),
            dice=_estimate(summary.dice) if summary else empty,
            hd95_mm=_estimate(summary.hd95_mm) if summary else empty,
            surface_dice=_estimate(summary.surface_dice) if summary else empty,
            detection_rate=_estimate(summary.detection_rate) if summary else empty,
            false_positive_ml=_estimate(summary.false_positive_ml) if summary else empty,
            non_empty_rate=round(sum(1 for r in results if r.predicted_ml > 0) / len(rows), 4)
            if rows
            else 0.0,
            cases=results,
        ),
        overlays,
    )


def _mean_dice(lake: Lake, model: str, rows: list[DatasetRow]) -> float:
    from radflow.segmentation.metrics import case_metrics

    found = _masks(lake, lake.segmentation_model(model), rows)
    dice = []
    for row, predicted in zip(rows, found, strict=True):
        image, mask = _whole(lake, row)
        spacing_zyx = tuple(float(s) for s in reversed(image.GetSpacing()))
        dice.append(
            case_metrics(
                _array(mask).astype(bool),
                predicted,
                spacing_zyx,  # type: ignore[arg-type]
                tolerance_mm=TOLERANCE_MM,
            ).dice
        )
    return float(np.mean(dice)) if dice else 0.0


def _test_rows(lake: Lake, card: SegmentationCard) -> list[DatasetRow]:
    rows = {r.volume: r for r in lake.dataset(card.dataset).rows}
    return [rows[v] for v in card.split.test]


def promote_segmentation(
    lake: Lake, model: str, params: SegmentationParams
) -> SegmentationDecision:
    """Promote when the sanity checks pass and the test Dice beats the champion's on the same
    test studies (the champion is run on them here) by `params.promotion_margin`. Decided
    once: a re-run returns the recorded decision."""
    if (decided := lake.segmentation_decision(model)) is not None:
        return decided
    card = lake.segmentation_card(model)
    dice = round(card.evaluation.dice.mean or 0.0, 4)
    previous = lake.segmentation_champion()
    previous_dice = None
    if previous is not None and previous != model:
        previous_dice = round(_mean_dice(lake, previous, _test_rows(lake, card)), 4)
    if card.failed:
        promoted, reason = False, f"sanity checks failed: {'; '.join(card.failed)}"
    elif previous is None or previous_dice is None:
        promoted, reason = True, "first segmentation model"
    elif dice >= previous_dice + params.promotion_margin:
        promoted, reason = True, f"test Dice {dice:.3f} beats {previous_dice:.3f} by the margin"
    else:
        promoted, reason = (
            False,
            f"test Dice {dice:.3f} does not beat {previous_dice:.3f} by the margin",
        )
    decision = SegmentationDecision(
        model=model,
        model_id=card.model_id,
        dice=dice,
        margin=params.promotion_margin,
        previous=previous,
        previous_dice=previous_dice,
        promoted=promoted,
        reason=reason,
    )
    lake.put_segmentation_decision(decision)
    if promoted:
        lake.set_segmentation_champion(
            SegmentationChampion(model=model, model_id=card.model_id, dice=dice)
        )
    return decision


def evaluate_with_model_rois(
    lake: Lake, model: str, segmentation: str, settings: Settings
) -> RoiEvaluation:
    """The classifier `model` on its annotated test studies twice: with the annotation's ROI
    (their feature rows as they are) and with the ROI the segmentation model finds in the
    whole image, prepared, extracted and scored as a new study would be."""
    from radflow.features.radiomics import extract
    from radflow.imaging.pipelines import preprocess_pipelines
    from radflow.models.evaluation import bootstrap_auc_ci
    from radflow.models.metrics import evaluate
    from radflow.models.predictor import Inputs

    if (done := lake.roi_evaluation(model, segmentation)) is not None:
        return done
    card = lake.card(model)
    seg_card = lake.segmentation_card(segmentation)
    _, _, rows = annotated_split(lake, card.dataset, settings.train)
    predictor = lake.model(model)
    masks = _masks(lake, lake.segmentation_model(segmentation), rows)
    kept, scored, empty = [], [], 0
    for row, mask in zip(rows, masks, strict=True):
        if not mask.any():
            empty += 1
            continue
        image = lake.image(row.volume, "whole")
        roi = sitk.GetImageFromArray(mask.astype(np.uint8))
        roi.CopyInformation(image)
        pipelines = preprocess_pipelines(settings.preprocess, lake.qc(row.volume).modality or "CT")
        image_hu, cropped = pipelines.geometry(image, roi)
        assert cropped is not None
        features = extract(image_hu, cropped, bin_width=settings.features.bin_width)
        x = np.array([[float(features[n]) for n in card.feature_names]], dtype=np.float64)
        volumes = None
        if predictor.needs_volumes:
            normalised, _ = pipelines.normalise(image_hu, cropped)
            volumes = sitk.GetArrayFromImage(normalised).astype(np.float32)[None]
        if not np.all(np.isfinite(x)):
            empty += 1
            continue
        kept.append(row)
        scored.append(float(predictor.predict_proba(Inputs(x, volumes))[0, 1]))
    annotation = lake.model_inputs(rows, card.feature_names, predictor.needs_volumes)
    y_all = [r.label for r in rows]
    annotation_auc = (
        round(evaluate(y_all, list(predictor.predict_proba(annotation)[:, 1])).auc, 4)
        if len(set(y_all)) == 2
        else None
    )
    y = [r.label for r in kept]
    model_auc, model_ci = None, None
    if len(set(y)) == 2:
        model_auc = round(evaluate(y, scored).auc, 4)
        try:
            lo, hi = bootstrap_auc_ci(
                y, scored, seed=settings.train.seed, groups=[r.patient_id for r in kept]
            )
            model_ci = (round(lo, 4), round(hi, 4))
        except ValueError:
            model_ci = None
    found = RoiEvaluation(
        model=model,
        segmentation=segmentation,
        segmentation_id=seg_card.model_id,
        studies=len(rows),
        annotation_auc=annotation_auc,
        model_roi_auc=model_auc,
        model_roi_auc_ci=model_ci,
        empty=empty,
    )
    lake.put_roi_evaluation(found)
    return found


def require_segmentation(lake: Lake, model_id: str | None) -> str:
    """The address of `model_id`, or of the champion when None; a clear error when neither."""
    if model_id:
        return lake.find_segmentation(model_id)
    champion = lake.segmentation_champion()
    if champion is None:
        raise RadflowError(
            "no segmentation champion",
            hint="run `radflow train` on studies with annotations (SEG, RTSTRUCT or --masks)",
        )
    return champion
