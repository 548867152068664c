"""The lake's records read back and written again give the bytes the stages wrote: content
addresses that hash a record (a dataset) and the byte-identical demo depend on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.lakes import TrainedLake, trained_lake

from radflow.errors import NotFoundError
from radflow.lake import Lake
from radflow.lake.records import (
    Champion,
    Dataset,
    Decision,
    FeatureRow,
    Label,
    Metrics,
    ModelCard,
    PendingArrival,
    Predictions,
    QuarantineRecord,
    Record,
    SegmentationDecision,
    StudyManifest,
    VolumeQC,
)
from radflow.stages.score import score_study
from radflow.store import LocalStore, ObjectStore


def _record_type(key: str) -> type[Record] | None:
    name = key.rsplit("/", 1)[-1]
    by_name: dict[str, type[Record]] = {
        "study.json": StudyManifest,
        "qc.json": VolumeQC,
        "predictions.json": Predictions,
        "card.json": ModelCard,
        "metrics.json": Metrics,
        "decision.json": Decision,
        "champion.json": Champion,
    }
    by_prefix: dict[str, type[Record]] = {
        "features/": FeatureRow,
        "datasets/": Dataset,
        "labels/": Label,
        "quarantine/": QuarantineRecord,
    }
    found = by_name.get(name)
    return found or next((t for p, t in by_prefix.items() if key.startswith(p)), None)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> TrainedLake:
    built = trained_lake(tmp_path_factory.mktemp("lake"))
    score_study(built.lake, built.rows[0], built.model)
    return built


def test_every_record_the_stages_wrote_round_trips_to_the_same_bytes(built: TrainedLake) -> None:
    seen: set[str] = set()
    for info in built.lake.store.list():
        record_type = _record_type(info.key)
        if record_type is None:
            continue
        data = built.lake.store.get_bytes(info.key)
        assert record_type.from_json(data).to_json().encode() == data, info.key
        seen.add(record_type.__name__)
    assert seen >= {
        "StudyManifest",
        "VolumeQC",
        "FeatureRow",
        "Label",
        "Dataset",
        "Predictions",
        "ModelCard",
        "Metrics",
        "Decision",
        "Champion",
    }


def test_records_refuse_what_they_do_not_define(built: TrainedLake) -> None:
    qc = json.loads(
        built.lake.store.get_text(f"{built.lake.feature_row(built.rows[0]).volume}/qc.json")
    )
    with pytest.raises(ValidationError):
        VolumeQC.model_validate({**qc, "lesion_type": "nodule"})  # unknown: a newer writer's
    with pytest.raises(ValidationError):
        VolumeQC.model_validate({k: v for k, v in qc.items() if k != "roi_voxels"})
    with pytest.raises(ValidationError):
        built.lake.card(built.model).model_copy().__setattr__("kind", "x")  # frozen


def test_optional_fields_are_absent_not_null() -> None:
    decision = Decision(
        model="m", model_id="lr-1", auc=0.9, margin=0.01, previous=None, promoted=True, reason="r"
    )
    assert "previous_auc" not in json.loads(decision.to_json())
    assert json.loads(decision.to_json())["previous"] is None  # a field that is always there
    compared = decision.model_copy(update={"previous_auc": 0.8})
    assert json.loads(compared.to_json())["previous_auc"] == 0.8


def test_an_output_is_there_only_once_its_committing_object_is(tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"))
    volume = "volumes/v3/" + "a" * 64
    lake.put_volume_file(volume, "registration_1.png", b"png")
    assert not lake.has(volume)  # a folder half written (a killed run) is not an output
    lake.store.put_text(f"{volume}/qc.json", "{}")
    assert lake.has(volume)
    assert not lake.has("features/v3/" + "b" * 64)


def test_the_champion_and_pending_arrivals(tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"))
    with pytest.raises(NotFoundError, match="no champion model"):
        lake.champion()
    lake.set_champion(Champion(model="models/v3/x", model_id="lr-x", auc=0.9))
    assert lake.champion() == "models/v3/x"
    assert lake.store.get_text("models/champion.json") == (
        '{"auc": 0.9, "model": "models/v3/x", "model_id": "lr-x"}'
    )
    record = PendingArrival(source="file:///in", prefix="", depth=1, arrival="c" * 24)
    lake.put_pending(record)
    assert lake.pending("c" * 24) == record and lake.pending("d" * 24) is None
    lake.clear_pending("c" * 24)
    assert lake.pending_arrivals() == []


def test_volume_qc_carries_the_series_selection(built: TrainedLake) -> None:
    """Every series of the de-identified study is in the volume's selection, under its
    de-identified UID; a record without a selection leaves the field out."""
    row = built.lake.feature_row(built.rows[0])
    qc = built.lake.qc(row.volume)
    manifest = built.lake.manifest(row.deid)
    selection = qc.selection
    assert selection is not None and qc.modality == "CT"
    listed = [c.series_uid for c in selection.series] + [o.series_uid for o in selection.objects]
    assert sorted(listed) == sorted(s.series_uid for s in manifest.series)
    assert selection.primary == selection.series[0].series_uid
    assert selection.series[0].role == "primary" and selection.series[0].rule == ""
    assert qc.series == len(selection.kept)
    bare = qc.model_copy(update={"selection": None})
    assert "selection" not in json.loads(bare.to_json())
    assert VolumeQC.from_json(bare.to_json()) == bare


FIRST = Decision(
    model="models/v3/" + "c" * 64,
    model_id="gb-1",
    auc=0.91,
    margin=0.01,
    previous=None,
    promoted=True,
    reason="no champion yet",
)


def test_the_lake_holds_a_stages_earlier_output_only_while_its_objects_are_there(
    tmp_path: Path,
) -> None:
    """What Prefect's cached values are checked against (tasks/stage_task.py: a deleted lake
    is rebuilt, not Cached)."""
    lake = Lake(LocalStore(tmp_path / "lake"))
    assert not lake.holds(FIRST.model) and not lake.holds(FIRST)
    assert lake.holds("") and lake.holds(None) and lake.holds(3)  # nothing named
    lake.store.put_text(f"{FIRST.model}/card.json", "{}")
    assert lake.holds(FIRST.model) and not lake.holds(FIRST)
    lake.put_decision(FIRST)
    assert lake.holds(FIRST)


def test_a_decision_reads_for_people_with_and_without_a_champion_to_compare() -> None:
    assert FIRST.markdown() == (
        "**gb-1**: test AUC 0.910; no comparable champion; margin 0.01.\n\n"
        "**Promoted**: no champion yet"
    )
    later = FIRST.model_copy(
        update={"previous": "gb-0", "previous_auc": 0.95, "promoted": False, "reason": "worse"}
    )
    assert later.markdown() == (
        "**gb-1**: test AUC 0.910; champion gb-0: test AUC 0.950 on the same rows; margin "
        "0.01.\n\n**Not promoted**: worse"
    )
    segmentation = SegmentationDecision(
        model="s",
        model_id="seg-1",
        dice=0.8,
        margin=0.02,
        previous=None,
        previous_dice=None,
        promoted=True,
        reason="first segmentation model",
    )
    assert segmentation.markdown() == (
        "**seg-1**: test Dice 0.800; no champion before; margin 0.02.\n\n"
        "**Promoted**: first segmentation model"
    )


def test_a_series_is_read_from_a_folder_lake_in_place_and_downloaded_from_s3(
    store: ObjectStore, tmp_path: Path
) -> None:
    """Copying a 600-file CT study out of a folder lake was a tenth of the volumes stage."""
    lake = Lake(store)
    for n in (2, 1, 3):
        lake.put_instance("deid/v3/study", "1.2.3", f"1.2.3.{n}", f"instance {n}".encode())
    folder = tmp_path / "scratch"
    paths = lake.series_files("deid/v3/study", "1.2.3", folder)
    assert [p.name for p in paths] == ["1.2.3.1.dcm", "1.2.3.2.dcm", "1.2.3.3.dcm"]
    assert [p.read_bytes() for p in paths] == [b"instance 1", b"instance 2", b"instance 3"]
    if isinstance(store, LocalStore):
        assert all(p.parent == store.root / "deid/v3/study/1.2.3" for p in paths)
        assert not folder.exists()
    else:
        assert all(p.parent == folder for p in paths)
