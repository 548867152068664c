"""Exceptions scrubbed of PHI, private files, the secret's sources, the re-identification map."""

from __future__ import annotations

import pickle
import stat
import traceback
from pathlib import Path

import pytest

from radflow.config import load_settings
from radflow.errors import ConfigError, QuarantineError
from radflow.keys import short_id
from radflow.privacy import (
    ScrubbedError,
    failure_cause,
    scrub_exceptions,
    scrubbed_cause,
    write_private,
)

PHI = "GARCIA^MARIA MRN7654321"
KEY = "raw-0123456789abcdef0123456789abcdef"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def failing(err: BaseException, cache: Path) -> object:
    @scrub_exceptions("anonymize", lambda: cache)
    def stage(ref: str) -> str:
        raise err

    return stage


def test_unexpected_exception_is_replaced_and_kept_in_a_private_log(tmp_path: Path) -> None:
    stage = failing(OSError(2, "No such file", f"/inbox/{PHI}/IM0001.dcm"), tmp_path / "cache")
    with pytest.raises(ScrubbedError) as info:
        stage(KEY)  # type: ignore[operator]
    err = info.value
    shown = "".join(traceback.format_exception(err))
    assert "MRN7654321" not in shown and "GARCIA" not in shown
    assert err.__cause__ is None and err.__suppress_context__
    assert str(err).startswith(
        "anonymize failed with FileNotFoundError (ENOENT: No such file or directory) on input"
        f" {short_id(KEY)};"
    )
    [log] = (tmp_path / "cache" / "errors").iterdir()
    assert log.name == err.log_name and log.name.startswith(f"anonymize-{short_id(KEY)}-")
    assert f"/inbox/{PHI}/IM0001.dcm" in log.read_text()  # the original, with its traceback
    assert "raise err" in log.read_text()
    assert mode(log) == 0o600 and mode(log.parent) == 0o700
    # Prefect pickles a failed task's exception: it must come back the same.
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ScrubbedError and str(again) == str(err)


def test_a_full_disk_is_named_without_the_path(tmp_path: Path) -> None:
    """A full disk fails every study alike; the message says so, not where it was writing."""
    full = OSError(28, "No space left on device", f"/lake/deid/{PHI}.dcm")
    with pytest.raises(ScrubbedError) as info:
        failing(full, tmp_path)(KEY)  # type: ignore[operator]
    assert "failed with OSError (ENOSPC: No space left on device) on input" in str(info.value)
    assert PHI not in "".join(traceback.format_exception(info.value))
    # Not an OS error, or one without a number: the class alone, as before.
    with pytest.raises(ScrubbedError, match=r"failed with OSError on input"):
        failing(OSError(f"odd {PHI}"), tmp_path)(KEY)  # type: ignore[operator]


def test_a_failed_studys_cause_is_its_stage_and_class_only(tmp_path: Path) -> None:
    with pytest.raises(ScrubbedError) as info:
        failing(OSError(28, f"full at {PHI}", f"/lake/{PHI}.dcm"), tmp_path)(KEY)  # type: ignore[operator]
    assert failure_cause(info.value) == "anonymize: OSError (ENOSPC: No space left on device)"
    # An error no stage scrubbed (Prefect's, a crash): its class, never its message.
    assert failure_cause(ValueError(f"Input X contains {PHI}")) == "ValueError"
    # From a Dask worker only the failed state's message comes back: the same cause, read there.
    message = f"Task run encountered an exception ScrubbedError: {info.value}"
    assert scrubbed_cause(message) == failure_cause(info.value)
    assert scrubbed_cause(f"Task run encountered an exception ValueError: {PHI}") is None


def test_library_exception_names_its_module(tmp_path: Path) -> None:
    from pydicom.errors import InvalidDicomError

    with pytest.raises(ScrubbedError, match=r"pydicom\.errors\.InvalidDicomError on input"):
        failing(InvalidDicomError(f"bad header of {PHI}"), tmp_path)(KEY)  # type: ignore[operator]


def test_radflow_errors_pass_with_their_chain_cut(tmp_path: Path) -> None:
    @scrub_exceptions("preprocess", lambda: tmp_path)
    def stage(ref: str) -> str:
        try:
            raise ValueError(f"header of {PHI}")
        except ValueError:
            raise QuarantineError("unreadable series") from None

    @scrub_exceptions("preprocess", lambda: tmp_path)
    def implicit(ref: str) -> str:
        try:
            raise ValueError(f"header of {PHI}")
        except ValueError:
            raise QuarantineError("unreadable series")  # noqa: B904 (the point of the test)

    for fn in (stage, implicit):
        with pytest.raises(QuarantineError) as info:
            fn(KEY)
        assert "MRN7654321" not in "".join(traceback.format_exception(info.value))
        assert info.value.__context__ is None
    assert not (tmp_path / "errors").exists()  # nothing to keep: the message is radflow's


def test_the_error_is_raised_even_when_the_log_cannot_be_written(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    with pytest.raises(ScrubbedError, match="not kept") as info:
        failing(RuntimeError(PHI), blocked)(KEY)  # type: ignore[operator]
    assert PHI not in "".join(traceback.format_exception(info.value))


def test_private_files_are_tightened_even_if_they_existed_loose(tmp_path: Path) -> None:
    folder = tmp_path / "reid"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    loose = folder / "map.jsonl"
    loose.write_text("old")
    loose.chmod(0o644)
    write_private(loose, "new")
    assert loose.read_text() == "new" and mode(loose) == 0o600 and mode(folder) == 0o700
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    (folder / "link.json").symlink_to(target)
    with pytest.raises(OSError):  # never written through a symlink
        write_private(folder / "link.json", "planted")
    assert target.read_text() == "untouched"


def test_the_pipeline_writes_the_reid_map_private(tmp_path: Path) -> None:
    from radflow.dicom.batch import BatchSummary, write_reid_map
    from radflow.stages.anonymize import write_reid_entry

    reid = tmp_path / "reid"
    reid.mkdir(mode=0o777)
    reid.chmod(0o777)
    write_reid_entry(reid, "3f9c0a1b2c4d", '{"patient_id": "MRN7654321"}')
    summary = BatchSummary()
    summary.mapping[("MRN7654321", "1.2.3")] = ("RF-X", "2.25.1", "ACC123")
    write_reid_map(summary, tmp_path / "cli-reid" / "map.jsonl", b"k" * 32)
    for path in (reid / "3f9c0a1b2c4d.json", tmp_path / "cli-reid" / "map.jsonl"):
        assert "MRN7654321" in path.read_text()
        assert mode(path) == 0o600 and mode(path.parent) == 0o700


@pytest.mark.parametrize("inside", ["lake", "lake/reid", "lake/a/b"])
def test_a_reid_dir_inside_a_local_lake_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: str
) -> None:
    monkeypatch.setenv("RADFLOW_STORE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("RADFLOW_DEID__REID_DIR", str(tmp_path / inside))
    with pytest.raises(
        ConfigError, match=r"RADFLOW_DEID__REID_DIR: .* must not be inside the lake"
    ):
        load_settings()
    monkeypatch.setenv("RADFLOW_DEID__REID_DIR", str(tmp_path / "lake-reid"))  # a sibling
    assert load_settings().deid.reid_dir == tmp_path / "lake-reid"


SECRET = "s3cr3t-" + "f00dfeed" * 4


def views_of(settings: object) -> list[str]:
    from radflow.config import Settings

    assert isinstance(settings, Settings)
    return [
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        str(settings.model_dump(mode="json")),
        settings.model_dump_json(),
    ]


def test_the_secret_never_shows_in_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADFLOW_SECRET", SECRET)
    from_env = load_settings()
    assert from_env.pseudonym_secret() == SECRET.encode()
    monkeypatch.delenv("RADFLOW_SECRET")
    secret_file = tmp_path / "secret.key"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    monkeypatch.setenv("RADFLOW_SECRET_FILE", str(secret_file))
    from_file = load_settings()
    assert from_file.pseudonym_secret() == SECRET.encode()
    given = load_settings(secret_block="radflow-secret").with_secret(SECRET)  # a block's value
    assert given.pseudonym_secret() == SECRET.encode()
    for settings in (from_env, from_file, given):
        for text in views_of(settings):
            assert SECRET not in text and "f00dfeed" not in text
    short = tmp_path / "short.key"
    short.write_text("tiny-s3cr3t")
    short.chmod(0o600)
    monkeypatch.setenv("RADFLOW_SECRET_FILE", str(short))
    with pytest.raises(ConfigError, match="shorter than 16 bytes") as info:
        load_settings().pseudonym_secret()
    assert "tiny" not in str(info.value) + info.value.hint  # nor in an error about it


def test_a_secret_block_outside_the_tasks_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADFLOW_SECRET_BLOCK", "radflow-secret")
    with pytest.raises(ConfigError, match=r"RADFLOW_SECRET_BLOCK: .* only inside") as info:
        load_settings().pseudonym_secret()
    assert "RADFLOW_SECRET_FILE" in info.value.hint


def test_stage_tags_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command's own temporary server turns them off (tests/stack/
    test_temporary_server_tags.py); a concurrency limit's tag such as `gpu` stays."""
    from tasks.runtime import task

    def body() -> None:
        return None

    monkeypatch.setenv("RADFLOW_STAGE_TAGS", "true")  # the default; the suite's is false
    assert task(tags=["stage:x", "gpu"])(body).tags == {"stage:x", "gpu"}
    monkeypatch.setenv("RADFLOW_STAGE_TAGS", "false")
    assert task(tags=["stage:x", "gpu"])(body).tags == {"gpu"}
