"""Where radflow writes when told nothing: run from the checkout, every default folder is
one git ignores (the cache holds PHI, the lake pseudonymous data); the re-identification map
is never in the current directory, but in the user's own data folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import typer

from radflow.cli import app
from radflow.config import Settings, default_reid_dir
from radflow.store import file_url_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No RADFLOW_* variable and no radflow.toml; a HOME of its own; cwd at the checkout."""
    import os

    for name in list(os.environ):
        if name.startswith("RADFLOW_") or name == "XDG_DATA_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RADFLOW_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(ROOT)
    return tmp_path / "home"


def _ignored(path: Path) -> bool:
    """Whether git ignores a file inside `path` (a folder that need not exist)."""
    probe = path.resolve() / "probe.dcm"
    done = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", str(probe)], check=False
    )
    assert done.returncode in (0, 1), "git check-ignore failed"
    return done.returncode == 0


def _cli_default_paths() -> dict[str, Path]:
    """Every option of every `radflow` command whose default is a path."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert len(commands) > 5
    found = {}
    for name, command in commands.items():
        for param in command.params:
            if isinstance(param.default, Path):
                found[f"radflow {name} --{param.name}"] = param.default
    return found


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout"
)
def test_every_default_output_folder_is_ignored_by_git(no_settings: Path) -> None:
    settings = Settings()
    defaults = {
        "RADFLOW_STORE_URL": file_url_path(settings.store_url),
        "RADFLOW_CACHE_DIR": settings.cache_dir,
        **_cli_default_paths(),
    }
    assert {"radflow demo --workdir", "radflow serve --home"} <= set(defaults)
    not_ignored = sorted(name for name, path in defaults.items() if not _ignored(path))
    assert not_ignored == []
    # The probe itself can fail: a folder of the checkout's own is not ignored.
    assert not _ignored(ROOT / "radflow")
    # The map's default is outside the checkout (and the current directory) altogether.
    reid = settings.deid.reid_dir
    assert reid.is_absolute() and ROOT not in reid.parents and Path.cwd() not in reid.parents


def test_the_reid_map_defaults_to_the_users_data_folder(
    no_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().deid.reid_dir == no_settings / ".local" / "share" / "radflow" / "reid"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_reid_dir() == tmp_path / "data" / "radflow" / "reid"
    assert Settings().deid.reid_dir == tmp_path / "data" / "radflow" / "reid"
    monkeypatch.setenv("RADFLOW_DEID__REID_DIR", str(tmp_path / "chosen"))
    assert Settings().deid.reid_dir == tmp_path / "chosen"
