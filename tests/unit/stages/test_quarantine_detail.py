"""Quarantine records carry radflow's detail (the gap in mm of a missing slice, say), and
`radflow.refusals` traces every record of a delivery back to the file or study folder it
names, on this machine only."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from support.badinput import corpus

from radflow.config import Settings, load_settings
from radflow.lake import Lake, QuarantineRecord
from radflow.refusals import refusals
from radflow.stages import anonymize, preprocess, run_stage
from radflow.stages.fetch import fetch_delivery
from radflow.store import LocalStore, open_store
from radflow.synth import SynthSpec, synthesize


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RADFLOW_SECRET", "detail-secret-" + "0123456789abcdef" * 2)
    return load_settings(
        store_url=(tmp_path / "lake").as_uri(),
        cache_dir=tmp_path / "cache",
        deid={"reid_dir": tmp_path / "reid"},
    )


def _prepare(folder: Path, lake: Lake, settings: Settings) -> None:
    """fetch -> anonymize -> preprocess as the tasks run them (no Prefect)."""
    fetched = fetch_delivery(open_store(folder.resolve().as_uri()), "", settings.cache_dir)
    for record in fetched.quarantined:
        lake.quarantine(record)
    for ref in fetched.studies:
        deid = run_stage(anonymize, lake, settings, [ref]).key
        run_stage(preprocess, lake, settings, [deid, ""])


def test_a_missing_slice_is_recorded_with_its_gap_in_mm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, monkeypatch)
    folder = tmp_path / "inbox"
    (study,) = synthesize(
        folder,
        tmp_path / "labels.csv",
        SynthSpec(studies=1, rows=32, columns=32, slices=12, seed=3),
    )
    for series in {f.parent for f in study.files}:
        slices = sorted(series.glob("*.dcm"))
        if len(slices) > 3:
            slices[len(slices) // 2].unlink()
    lake = Lake(LocalStore(tmp_path / "lake"))
    _prepare(folder, lake, settings)

    (record,) = [r for _, r in lake.quarantine_records()]
    assert (record.stage, record.reason) == ("preprocess", "missing slices")
    assert re.fullmatch(r"gap of \d+\.\d\d mm where \d+\.\d\d mm is expected", record.detail)
    stored = json.loads((tmp_path / "lake" / record.store_key).read_text())
    assert stored["detail"] == record.detail


def test_a_record_without_detail_keeps_its_bytes() -> None:
    record = QuarantineRecord.for_key("s3://b", "k", "fetch", "unsafe object key")
    assert "detail" not in json.loads(record.to_json())
    assert QuarantineRecord.from_json(record.to_json()) == record


def test_every_record_of_a_delivery_is_traced_to_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, monkeypatch)
    folder, _, bad = corpus(tmp_path)
    lake = Lake(LocalStore(tmp_path / "lake"))
    _prepare(folder, lake, settings)
    where = folder.resolve().as_posix() + "/"

    found = refusals(lake, settings, open_store(folder.resolve().as_uri()), "", where)
    assert len(found) == len(bad)
    by_location = {r.location: r for r in found}
    for item in bad:
        if len(item.files) == 1:  # a file: fetch or anonymize set it aside alone
            expected = item.files[0].resolve().as_posix()
        else:  # a study: its folder
            expected = os.path.commonpath([f.resolve() for f in item.files]) + "/"
        assert expected in by_location, item.name
        assert (by_location[expected].record.stage, by_location[expected].record.reason) == (
            item.stage,
            item.reason,
        )
        assert by_location[expected].record.detail  # every refusal says what exactly

    # Without the delivery, the raw cache still names the files and studies it holds.
    everything = refusals(lake, settings)
    assert len(everything) == len(bad)
    assert sum(bool(r.location) for r in everything) == sum(b.stage != "fetch" for b in bad)
    # The lake itself never learns where: no record holds a path or a key.
    for path in (tmp_path / "lake" / "quarantine").rglob("*.json"):
        text = path.read_text()
        assert str(tmp_path) not in text and "junk" not in text and ".dcm" not in text


def test_a_refusal_goes_once_its_file_is_fixed(tmp_path: Path) -> None:
    from radflow.delivery import refused_files

    folder = tmp_path / "inbox"
    spec = SynthSpec(studies=1, rows=16, columns=16, slices=8, seed=1)
    (study,) = synthesize(folder, tmp_path / "labels.csv", spec)
    (tmp_path / "labels.csv").unlink(missing_ok=True)
    good = sorted(study.files)[0]
    late = folder / "late.dcm"
    late.write_bytes(b"")  # the gateway had not finished writing it
    lake = Lake(LocalStore(tmp_path / "lake"))
    inbox = open_store(folder.resolve().as_uri())

    first = fetch_delivery(inbox, "", tmp_path / "cache")
    for record in first.quarantined:
        lake.quarantine(record)
    assert refused_files(lake, inbox, "") == {"empty file": 1}

    late.write_bytes(good.read_bytes())  # now whole (a second copy of an instance)
    again = fetch_delivery(inbox, "", tmp_path / "cache")
    assert not again.quarantined
    assert lake.clear_quarantine(again.accepted) == 1
    assert refused_files(lake, inbox, "") == {}
    assert lake.clear_quarantine(again.accepted) == 0
