"""Settings: defaults, environment, TOML, and one clear error naming a bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from radflow.config import load_settings
from radflow.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("RADFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_embedded() -> None:
    s = load_settings()
    assert s.store_url == "file://./radflow-data"
    assert s.preprocess.spacing_mm == (1.5, 1.5, 1.5)
    assert s.secret is None


def test_environment_and_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADFLOW_STORE_URL", "s3://bucket/lake")
    monkeypatch.setenv("RADFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("RADFLOW_PREPROCESS__SHAPE", "[48, 48, 32]")
    s = load_settings()
    assert s.store_url == "s3://bucket/lake"
    assert s.preprocess.shape == (48, 48, 32)


def test_s3_options_carry_the_s3_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from radflow.store import S3Options

    assert load_settings().s3_options() == S3Options()  # the store's defaults are the settings'
    monkeypatch.setenv("RADFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("RADFLOW_S3_REGION", "eu-west-1")
    monkeypatch.setenv("RADFLOW_S3_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RADFLOW_S3_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("RADFLOW_S3_READ_TIMEOUT", "30")
    assert load_settings().s3_options() == S3Options(
        "http://127.0.0.1:9000", "eu-west-1", 3, 2.5, 30.0
    )


def test_the_store_and_the_readers_do_not_import_the_settings() -> None:
    import subprocess
    import sys

    modules = "radflow.store, radflow.imaging.read, radflow.imaging.nifti, radflow.stages.fetch"
    probe = f"import sys, {modules}; sys.exit('radflow.config' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


@pytest.mark.parametrize(("value", "on"), [("false", False), ("0", False), ("true", True)])
def test_stage_tags(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    assert load_settings().stage_tags is True
    monkeypatch.setenv("RADFLOW_STAGE_TAGS", value)
    assert load_settings().stage_tags is on


def test_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "radflow.toml").write_text('store_url = "file:///data/lake"\n[train]\nseed = 7\n')
    s = load_settings()
    assert s.store_url == "file:///data/lake" and s.train.seed == 7
    monkeypatch.setenv("RADFLOW_TRAIN__SEED", "9")  # the environment wins over the file
    assert load_settings().train.seed == 9


@pytest.mark.parametrize(
    ("env", "value", "setting"),
    [
        ("RADFLOW_STORE_URL", "ftp://host/x", "RADFLOW_STORE_URL"),
        ("RADFLOW_STORE_URL", "s3://", "RADFLOW_STORE_URL"),
        ("RADFLOW_PREPROCESS__SPACING_MM", "[1, 0, 1]", "RADFLOW_PREPROCESS__SPACING_MM"),
        ("RADFLOW_TRAIN__TEST_FRACTION", "0.9", "RADFLOW_TRAIN__TEST_FRACTION"),
        ("RADFLOW_FEATURES__BIN_WIDTH", "zero", "RADFLOW_FEATURES__BIN_WIDTH"),
    ],
)
def test_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, setting: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == setting
    assert "\n" not in str(info.value) and setting in str(info.value)


def test_unknown_setting_in_toml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "radflow.toml").write_text("store_ulr = 'file:///x'\n")
    with pytest.raises(ConfigError, match="STORE_ULR"):
        load_settings()


def test_secret_is_required_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no pseudonymisation secret"):
        load_settings().pseudonym_secret()
    monkeypatch.setenv("RADFLOW_SECRET", "s3cr3t-value-that-is-long")
    s = load_settings()
    assert s.pseudonym_secret() == b"s3cr3t-value-that-is-long"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.model_dump())


def test_secret_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "secret.key"
    f.write_text("0123456789abcdef0123456789abcdef")
    f.chmod(0o644)
    monkeypatch.setenv("RADFLOW_SECRET_FILE", str(f))
    with pytest.raises(ConfigError, match="readable by others"):
        load_settings().pseudonym_secret()
    f.chmod(0o600)
    assert load_settings().pseudonym_secret() == b"0123456789abcdef0123456789abcdef"
    f.write_text("short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_settings().pseudonym_secret()


def test_radflow_errors_survive_pickling() -> None:
    """Prefect pickles the exception of a failed task and reads it back elsewhere."""
    import pickle

    from radflow.errors import ConfigError, NotFoundError, QuarantineError, RadflowError
    from radflow.store import StoreError

    for err in (
        RadflowError("went wrong", hint="do this"),
        ConfigError("RADFLOW_SECRET_FILE", "is readable by others", hint="chmod 600"),
        QuarantineError("truncated DICOM file", "the file ends inside its header"),
        NotFoundError("no champion model", hint="radflow train"),
        StoreError("S3 get failed", hint="check the endpoint"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert str(back) == str(err) and back.hint == err.hint
        assert vars(back) == vars(err)
