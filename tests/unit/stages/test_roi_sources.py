"""Where the ROI comes from, through the stage functions on realistic synthetic studies: a
SEG or RTSTRUCT in the study wins and is used exactly; without one, a soft-tissue lesion has
no ROI unless something finds it; the rule only where listed; a bad annotation is set aside
with its reason and the next source is tried."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radflow.config import PreprocessParams, Settings, load_settings
from radflow.errors import QuarantineError
from radflow.imaging.pipelines import preprocess_pipelines
from radflow.imaging.read import read_series
from radflow.imaging.roi_source import NO_ROI
from radflow.lake import Lake
from radflow.stages.anonymize import anonymize_study
from radflow.stages.fetch import fetch_delivery
from radflow.stages.preprocess import build_volume
from radflow.store import LocalStore, open_store
from radflow.synth import SynthSpec, SynthStudy, synthesize

SECRET = "roi-sources-secret-" + "0123456789abcdef" * 2
SMALL = SynthSpec(studies=1, rows=48, columns=48, slices=16, seed=11)
PREP = {"spacing_mm": (2.0, 2.0, 2.0), "shape": (24, 24, 24)}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RADFLOW_SECRET", SECRET)
    monkeypatch.delenv("RADFLOW_PREPROCESS__ROI_SOURCES", raising=False)
    return load_settings(store_url=(tmp_path / "lake").as_uri(), preprocess=PREP)


def _study(tmp_path: Path, settings: Settings, spec: SynthSpec) -> tuple[Lake, str, SynthStudy]:
    inbox = tmp_path / "inbox"
    [study] = synthesize(inbox, tmp_path / "labels.csv", spec)
    lake = Lake(LocalStore(tmp_path / "lake"))
    [ref] = fetch_delivery(open_store(inbox.as_uri()), "", tmp_path / "cache").studies
    deid = anonymize_study(lake, tmp_path / "cache", ref, settings.deid_config(), tmp_path / "reid")
    return lake, deid, study


def _truth_on_the_crop(study: SynthStudy, params: PreprocessParams) -> int:
    """The lesion's exact voxels, put through the preprocessing's own geometry."""
    assert study.truth is not None
    primary = read_series(sorted(p for p in study.files if "/S1/" in str(p)))
    truth = sitk.GetImageFromArray(study.truth.mask().astype(np.uint8))
    truth.CopyInformation(primary)
    _, mask = preprocess_pipelines(params, "CT").geometry(primary, truth)
    assert mask is not None
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))


@pytest.mark.parametrize("kind", ["seg", "rtstruct"])
def test_the_studys_annotation_is_the_roi_exactly(
    tmp_path: Path, settings: Settings, kind: str
) -> None:
    spec = replace(SMALL, annotations=(kind,), soft_tissue_lesions=1.0, localizers=1.0)
    lake, deid, study = _study(tmp_path, settings, spec)
    assert study.lesion == "soft"  # the rule could not find it
    qc = lake.qc(build_volume(lake, deid, settings.preprocess))
    assert qc.roi_source == f"annotation:{kind.upper()}"
    assert qc.roi_voxels == _truth_on_the_crop(study, settings.preprocess) > 0
    assert not any("annotation not used" in w for w in qc.warnings)


def test_without_an_annotation_or_model_there_is_no_roi(tmp_path: Path, settings: Settings) -> None:
    lake, deid, _ = _study(tmp_path, settings, replace(SMALL, soft_tissue_lesions=1.0))
    with pytest.raises(QuarantineError, match=NO_ROI) as caught:
        build_volume(lake, deid, settings.preprocess)
    assert caught.value.detail == "sources tried: annotation, model"


def test_the_rule_only_where_listed(tmp_path: Path, settings: Settings) -> None:
    with_rule = settings.preprocess.model_copy(update={"roi_sources": ("annotation", "rule")})
    lake, deid, study = _study(tmp_path, settings, SMALL)
    assert study.lesion == "bright"
    qc = lake.qc(build_volume(lake, deid, with_rule))
    assert qc.roi_source == "rule"
    with pytest.raises(QuarantineError, match=NO_ROI):
        build_volume(lake, deid, settings.preprocess)


def test_an_annotation_that_gives_no_roi_is_set_aside_for_the_next_source(
    tmp_path: Path, settings: Settings
) -> None:
    # The settings ask for segment 7, which the SEG does not have.
    spec = replace(SMALL, annotations=("seg",))
    lake, deid, study = _study(tmp_path, settings, spec)
    assert study.lesion == "bright"
    params = settings.preprocess.model_copy(
        update={
            "roi_sources": ("annotation", "rule"),
            "roi_segment": settings.preprocess.roi_segment.model_copy(update={"number": 7}),
        }
    )
    qc = lake.qc(build_volume(lake, deid, params))
    assert qc.roi_source == "rule"
    [set_aside] = [w for w in qc.warnings if "annotation not used" in w]
    assert set_aside.startswith("SEG annotation not used: ")
    assert "7" in set_aside
