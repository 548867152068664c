"""The segmentation model through the real stages, without Prefect: trained on the annotated
studies of the classifier's split, evaluated on the same test patients, promoted by the rule,
used as the ROI source of a study without an annotation, and quarantined when it finds
nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from support.lakes import IngestedLake, ingested_lake

from radflow.config import PreprocessParams, TrainSettings
from radflow.imaging.pipelines import preprocessing
from radflow.lake import Lake
from radflow.lake.records import SegmentationChampion
from radflow.models.table import training_table
from radflow.segmentation.params import SegmentationParams
from radflow.stages import preprocess, run_stage
from radflow.stages.candidates import fit_feature_candidates
from radflow.stages.dataset import build_dataset
from radflow.stages.registry import promote_if_better, register_model
from radflow.stages.segmentation import (
    evaluate_with_model_rois,
    promote_segmentation,
    segmentation_address,
    train_segmentation_model,
)
from radflow.synth import SynthSpec

# Every study annotated with a SEG; bright lesions (the soft ones are the demo's harder case).
ANNOTATED = SynthSpec(
    studies=16, rows=48, columns=48, slices=24, annotations=("seg",), annotated=1.0, seed=3
)
SEG = SegmentationParams(
    channels=(8, 16, 32), strides=(2, 2), patch=(24, 24, 24), epochs=12, samples_per_epoch=32
)
TRAIN = TrainSettings(candidates=("lr",), segmentation=SEG)


@pytest.fixture(scope="module")
def annotated_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[IngestedLake, str, str]:
    """The annotated studies ingested, a classifier and a segmentation model trained."""
    built = ingested_lake(tmp_path_factory.mktemp("seg"), ANNOTATED)
    lake, settings = built.lake, built.settings
    data = build_dataset(
        lake, built.rows, preprocessing(settings.preprocess), settings.features.model_dump()
    )
    model = register_model(lake, data, [fit_feature_candidates(lake, data, TRAIN)], TRAIN)
    promote_if_better(lake, model, TRAIN)
    segmentation = train_segmentation_model(lake, data, TRAIN)
    return built, model, segmentation


def test_the_model_is_trained_on_the_classifiers_split_and_finds_the_lesions(
    annotated_lake: tuple[IngestedLake, str, str],
) -> None:
    built, model, segmentation = annotated_lake
    lake = built.lake
    card = lake.segmentation_card(segmentation)
    table = training_table(lake.dataset(lake.card(model).dataset), TRAIN)
    # The same patients held out for both models.
    assert card.split.test == [table.rows[i].volume for i in table.split.test]
    assert card.split.fit == [table.rows[i].volume for i in table.split.fit]
    assert set(card.split.fit).isdisjoint(card.split.test)
    e = card.evaluation
    assert e.n_cases == len(card.split.test) == len(e.cases) >= 3
    assert e.dice.mean is not None and e.dice.mean >= 0.8
    assert e.dice.ci is not None and e.dice.ci[0] <= e.dice.mean <= e.dice.ci[1]
    assert e.detection_rate.mean == 1.0 and e.non_empty_rate == 1.0
    assert e.hd95_mm.mean is not None and e.hd95_mm.mean < 5.0
    assert all(card.sanity.values()), card.failed
    assert card.model_id == f"seg-{segmentation.rsplit('/', 1)[-1][:12]}"
    # One overlay image per test study, PNG.
    for study in card.split.test_studies:
        png = lake.segmentation_overlay(segmentation, study)
        assert png is not None and png.startswith(b"\x89PNG")
    # Cached: the same address, nothing retrained.
    assert train_segmentation_model(lake, card.dataset, TRAIN) == segmentation
    assert segmentation == segmentation_address(card.dataset, TRAIN)


def test_promotion_beats_the_champion_by_the_margin_on_the_same_studies(
    annotated_lake: tuple[IngestedLake, str, str], tmp_path: Path
) -> None:
    built, _, segmentation = annotated_lake
    lake = built.copy(tmp_path).lake
    first = promote_segmentation(lake, segmentation, SEG)
    assert first.promoted and first.reason == "first segmentation model"
    assert lake.segmentation_champion() == segmentation
    assert promote_segmentation(lake, segmentation, SEG) == first  # decided once
    # A second model (other seed) must beat the champion's Dice on its own test studies by
    # the margin; with a margin of 1 nothing can.
    card = lake.segmentation_card(segmentation)
    strict = TRAIN.model_copy(
        update={"seed": 1, "segmentation": SEG.model_copy(update={"promotion_margin": 1.0})}
    )
    other = train_segmentation_model(lake, card.dataset, strict)
    assert other != segmentation
    decision = promote_segmentation(lake, other, strict.segmentation)
    assert not decision.promoted
    assert decision.previous == segmentation and decision.previous_dice is not None
    assert "does not beat" in decision.reason
    assert lake.segmentation_champion() == segmentation


def test_the_classifier_is_evaluated_on_the_models_rois(
    annotated_lake: tuple[IngestedLake, str, str], tmp_path: Path
) -> None:
    built, model, segmentation = annotated_lake
    copy = built.copy(tmp_path)
    settings = copy.settings.model_copy(update={"train": TRAIN})
    found = evaluate_with_model_rois(copy.lake, model, segmentation, settings)
    assert copy.lake.roi_evaluation(model, segmentation) == found  # stored
    assert found.studies == len(copy.lake.segmentation_card(segmentation).split.test)
    assert found.empty == 0
    assert found.annotation_auc is not None and found.model_roi_auc is not None


def _unannotated_deid(built: IngestedLake, tmp_path: Path, lake: Lake) -> str:
    """One new study without an annotation, de-identified into `lake`."""
    from radflow.stages.anonymize import anonymize_study
    from radflow.stages.fetch import fetch_delivery
    from radflow.store import LocalStore
    from radflow.synth import synthesize

    spec = replace(ANNOTATED, studies=1, annotations=(), seed=77)
    synthesize(tmp_path / "new", tmp_path / "new.csv", spec)
    settings = built.settings
    (ref,) = fetch_delivery(LocalStore(tmp_path / "new"), "", tmp_path / "cache").studies
    return anonymize_study(lake, tmp_path / "cache", ref, settings.deid_config(), tmp_path / "r")


def test_a_study_without_annotation_takes_the_models_roi(
    annotated_lake: tuple[IngestedLake, str, str], tmp_path: Path
) -> None:
    built, _, segmentation = annotated_lake
    copy = built.copy(tmp_path)
    deid = _unannotated_deid(copy, tmp_path, copy.lake)
    settings = copy.settings.model_copy(
        update={"preprocess": PreprocessParams(roi_sources=("annotation", "model"))}
    )
    outcome = run_stage(preprocess, copy.lake, settings, [deid, segmentation])
    assert outcome.quarantined is None and outcome.key is not None
    assert outcome.key == preprocess.address(settings, deid, segmentation)
    assert outcome.key != preprocess.address(settings, deid, "")  # the model is an input
    qc = copy.lake.qc(outcome.key)
    card = copy.lake.segmentation_card(segmentation)
    assert qc.roi_source == f"model:{card.model_id}"
    assert qc.roi_voxels > 0
    # No annotation, so no training images kept for the segmentation model.
    assert not copy.lake.store.exists(f"{outcome.key}/whole.nii.gz")
    # Without the model among the sources the same study has no ROI at all.
    without = settings.model_copy(
        update={"preprocess": PreprocessParams(roi_sources=("annotation",))}
    )
    refused = run_stage(preprocess, copy.lake, without, [deid, segmentation])
    assert refused.quarantined is not None
    assert refused.quarantined.reason.startswith("no region of interest")


def test_a_study_where_the_model_finds_nothing_is_quarantined_naming_it(
    annotated_lake: tuple[IngestedLake, str, str], tmp_path: Path
) -> None:
    built, _, segmentation = annotated_lake
    copy = built.copy(tmp_path)
    lake = copy.lake
    # The same model, asked for a region of at least 10 litres: nothing it finds is plausible.
    model = lake.segmentation_model(segmentation)
    picky = model.params.model_copy(update={"min_volume_ml": 10_000.0, "max_volume_ml": 20_000.0})
    lake.store.put_bytes(f"{segmentation}/model.pt", replace(model, params=picky).to_bytes())
    lake.set_segmentation_champion(SegmentationChampion(model=segmentation, model_id="x", dice=0.0))
    deid = _unannotated_deid(copy, tmp_path, lake)
    settings = copy.settings.model_copy(
        update={"preprocess": PreprocessParams(roi_sources=("annotation", "model"))}
    )
    outcome = run_stage(preprocess, lake, settings, [deid, segmentation])
    assert outcome.key is None and outcome.quarantined is not None
    card = lake.segmentation_card(segmentation)
    assert outcome.quarantined.reason == f"implausible region found by model {card.model_id}"
    assert "too small" in outcome.quarantined.detail


def test_whole_images_are_kept_for_annotated_studies_on_the_preprocessed_spacing(
    annotated_lake: tuple[IngestedLake, str, str],
) -> None:
    built, _, segmentation = annotated_lake
    lake = built.lake
    volume = lake.segmentation_card(segmentation).split.fit[0]
    whole, mask = lake.image(volume, "whole"), lake.image(volume, "whole_mask")
    assert whole.GetSpacing() == pytest.approx(built.settings.preprocess.spacing_mm)
    assert whole.GetSize() == mask.GetSize() and whole.GetOrigin() == mask.GetOrigin()
    assert whole.GetPixelID() == sitk.sitkInt16
    # The whole image holds the cropped one's ROI: as many voxels (same grid spacing).
    cropped = lake.image(volume, "mask")
    assert np.count_nonzero(sitk.GetArrayViewFromImage(mask)) == np.count_nonzero(
        sitk.GetArrayViewFromImage(cropped)
    )


def test_radflow_segment_writes_the_mask_on_the_images_grid(
    annotated_lake: tuple[IngestedLake, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from typer.testing import CliRunner

    from radflow.cli import app

    built, _, segmentation = annotated_lake
    copy = built.copy(tmp_path)
    monkeypatch.setenv("RADFLOW_STORE_URL", copy.root.as_uri())
    runner = CliRunner()
    # No champion yet: one line and a hint.
    refused = runner.invoke(app, ["segment", "x.nii.gz", "--out", str(tmp_path / "m.nii.gz")])
    assert refused.exit_code == 2 and "error: nothing at x.nii.gz" in refused.output
    # A study's whole image, written as NIfTI with an anisotropic, rotated grid.
    card = copy.lake.segmentation_card(segmentation)
    image = copy.lake.image(card.split.test[0], "whole")
    image = sitk.Resample(
        image,
        [s // 2 + 3 for s in image.GetSize()],
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        (2.0, 2.5, 3.0),
        image.GetDirection(),
        -1024.0,
    )
    source = tmp_path / "study.nii.gz"
    sitk.WriteImage(image, str(source))
    out = tmp_path / "mask.nii.gz"
    no_model = runner.invoke(app, ["segment", str(source), "--out", str(out)])
    assert no_model.exit_code == 2 and "error: no segmentation champion" in no_model.output
    assert not out.exists()
    done = runner.invoke(
        app, ["segment", str(source), "--out", str(out), "--model", card.model_id, "--json"]
    )
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["model"] == card.model_id and result["problem"] is None
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == image.GetSize()
    assert mask.GetSpacing() == pytest.approx(image.GetSpacing())
    assert mask.GetOrigin() == pytest.approx(image.GetOrigin())
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    assert voxels > 0
    assert result["volume_ml"] == pytest.approx(voxels * 2.0 * 2.5 * 3.0 / 1000, abs=1e-3)
    unknown = runner.invoke(app, ["segment", str(source), "--out", str(out), "--model", "seg-zz"])
    assert unknown.exit_code == 2 and "error: no segmentation model seg-zz" in unknown.output
