"""What a stage's cache record stands on (`radflow.stages.cache_key` and `still_there`, the
rules `tasks.stage_task.LakeAddress` hands to Prefect): an output counts only while the lake
still has it, and a study set aside only while its quarantine record is there."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from radflow.config import load_settings
from radflow.errors import QuarantineError
from radflow.lake import Lake
from radflow.stages import cache_key, run_stage, still_there
from radflow.store import LocalStore

NAME = "stand-in"


def _stage(fail: bool) -> Any:
    def run(lake: Lake, settings: Any, key: str) -> str:
        if fail:
            raise QuarantineError("no use", "a stand-in's refusal")
        lake.store.put_text(f"out/{key}", "done")
        return f"out/{key}"

    return SimpleNamespace(NAME=NAME, address=lambda settings, key: f"out/{key}", run=run)


def test_an_output_stands_while_the_lake_has_it(tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"))
    out = run_stage(_stage(fail=False), lake, load_settings(), ["study-1"]).key
    assert out == "out/study-1"
    assert still_there(lake, NAME, out, "study-1")
    assert not still_there(lake, NAME, out, "study-1", holds=lambda _: False)
    shutil.rmtree(tmp_path / "lake")
    assert not still_there(lake, NAME, out, "study-1")


def test_a_set_aside_study_stands_while_its_record_is_there(tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"))
    outcome = run_stage(_stage(fail=True), lake, load_settings(), ["study-2"])
    assert outcome.key is None and outcome.quarantined is not None
    assert still_there(lake, NAME, None, "study-2")
    assert not still_there(lake, NAME, None, "study-3")
    shutil.rmtree(tmp_path / "lake")
    assert not still_there(lake, NAME, None, "study-2")


def test_the_key_is_the_address_in_this_lake(tmp_path: Path) -> None:
    one, other = Lake(LocalStore(tmp_path / "a")), Lake(LocalStore(tmp_path / "b"))
    key = cache_key(one, NAME, "out/study-1")
    assert key.startswith(f"radflow-{NAME}-") and len(key) == len(f"radflow-{NAME}-") + 64
    assert key == cache_key(one, NAME, "out/study-1")
    assert key != cache_key(other, NAME, "out/study-1")
    assert key != cache_key(one, NAME, "out/study-2")
    assert key != cache_key(one, "another", "out/study-1")
