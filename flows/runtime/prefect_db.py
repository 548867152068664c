"""A new Prefect home's SQLite database copied from a template, not migrated from nothing.

On its first start on a new database Prefect's server runs every Alembic revision it has,
then registers its block types: 9.9 s to its first healthy answer here, against 3.1 s on a
database that exists. Every `radflow demo` workdir is a new Prefect home, as is a fresh
machine's `~/.prefect`. So the first temporary server radflow starts on a new database
leaves a copy of it, taken as soon as the server answers (migrated, block types
registered, no run yet), in `$XDG_CACHE_HOME/radflow/` (else `~/.cache/radflow/`) under
Prefect's version, and a later new home starts from that copy: 3.5 s. The server still
runs its migrations on every start; on the copy they find nothing to do.

Only Prefect's default database (`PREFECT_HOME/prefect.db`) is touched, and only when it
does not exist yet: a configured database (an environment variable or a profile naming one;
PostgreSQL for `radflow serve`) is left alone. Standard library only: this runs before
anything else is imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Settings that point Prefect's server at another database than PREFECT_HOME/prefect.db
# (Prefect 3.8's names under both of its prefixes).
_DATABASE_CHOICES = ("CONNECTION_URL", "DRIVER", "HOST", "NAME")
_PREFIXES = ("PREFECT_API_DATABASE_", "PREFECT_SERVER_DATABASE_")
# Rows the first server writes that belong to one installation, not to the schema.
_INSTALLATION_KEYS = ("TELEMETRY_SESSION", "ENCRYPTION_KEY")


def default_database(env: Mapping[str, str]) -> Path | None:
    """The SQLite file a server started with `env` uses, when it is Prefect's default one;
    None when a database is configured."""
    if any(n.startswith(_PREFIXES) and n.endswith(_DATABASE_CHOICES) for n in env):
        return None
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    profiles = Path(env.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    with contextlib.suppress(OSError):
        if "DATABASE" in profiles.read_text(encoding="utf-8").upper():
            return None
    return home / "prefect.db"


def template(env: Mapping[str, str]) -> Path | None:
    """Where the template for this Prefect version lives; None without Prefect."""
    try:
        prefect = version("prefect")
    except PackageNotFoundError:
        return None
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "radflow" / f"prefect-{prefect}.db"


def seed(database: Path, source: Path) -> bool:
    """Copy `source` to `database` if there is no database there yet; True when copied.

    The copy appears under its name at once (a hard link of a finished file), and never over
    a database another process has just made: `os.link` refuses an existing name."""
    if not source.is_file() or any(
        database.with_name(database.name + suffix).exists() for suffix in ("", "-wal", "-journal")
    ):
        return False
    database.parent.mkdir(parents=True, exist_ok=True)
    part = database.with_name(f".{database.name}.{os.getpid()}.part")
    try:
        shutil.copyfile(source, part)
        os.link(part, database)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            part.unlink()


def keep(database: Path, target: Path) -> None:
    """Save a consistent copy of the running server's new `database` as the template (once:
    an existing template stays). A failure leaves no template; the next new home migrates."""
    if target.exists():
        return
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
        copy = sqlite3.connect(part)
        try:
            source.backup(copy)  # SQLite's online backup: consistent while the server writes
            with contextlib.suppress(sqlite3.OperationalError):  # no such table: nothing kept
                copy.execute("DELETE FROM configuration WHERE key IN (?, ?)", _INSTALLATION_KEYS)
            copy.commit()
            copy.execute("PRAGMA journal_mode=DELETE")  # one file, whatever the server's mode
        finally:
            copy.close()
            source.close()
        os.replace(part, target)
    except (OSError, sqlite3.Error):
        with contextlib.suppress(OSError):
            part.unlink()
