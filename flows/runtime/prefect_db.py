"""A new Prefect home's SQLite database copied from a template, not migrated from nothing.

On its first start on a new database Prefect's server runs every Alembic revision it has,
then registers its block types: 9.5 s to its first healthy answer here, against 2.9 s on a
database that exists. Every `radflow demo` workdir is a new Prefect home, as is a fresh
machine's `~/.prefect`. So the first temporary server radflow starts on a new database
leaves a copy of it, taken as soon as the server answers (migrated, block types
registered, no run yet), in `$XDG_CACHE_HOME/radflow/` (else `~/.cache/radflow/`) under
Prefect's version, and a later new home starts from that copy.

A database known to be current is not checked again: after a server of this Prefect version
has brought it up to date (or it was copied from this version's template), `current.json`
beside it records the version and the database's Alembic revision. While both still hold,
the next server starts without its migration run and its block-type registration check
(`STARTUP_CHECKS_OFF`): 2.4 s to healthy, a seeded home too (bench/prefect_boot_bench.py).
Another Prefect version, or another database put in its place, makes the checks run again.

A command that ends before its server answers (refused by the preflight, Ctrl-C) removes the
database it seeded again, and the home folder if it made it (`Seeded.undo`).

Only Prefect's default database (`PREFECT_HOME/prefect.db`) is touched, and only when it
does not exist yet: a configured database (an environment variable or a profile naming one;
PostgreSQL for `radflow serve`) is left alone. Standard library only: this runs before
anything else is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Settings that point Prefect's server at another database than PREFECT_HOME/prefect.db
# (Prefect 3.8's names under both of its prefixes).
_DATABASE_CHOICES = ("CONNECTION_URL", "DRIVER", "HOST", "NAME")
_PREFIXES = ("PREFECT_API_DATABASE_", "PREFECT_SERVER_DATABASE_")
# Rows the first server writes that belong to one installation, not to the schema.
_INSTALLATION_KEYS = ("TELEMETRY_SESSION", "ENCRYPTION_KEY")
# The server's start-up work on a database that is already current (Prefect 3.8's names).
STARTUP_CHECKS_OFF = {
    "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}
_CURRENT = "current.json"


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


def prefect_version() -> str | None:
    try:
        return version("prefect")
    except PackageNotFoundError:
        return None


def template(env: Mapping[str, str]) -> Path | None:
    """Where the template for this Prefect version lives; None without Prefect."""
    if (prefect := prefect_version()) is None:
        return None
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "radflow" / f"prefect-{prefect}.db"


def _part(path: Path) -> Path:
    """A temporary name beside `path`, renamed or linked into place once whole."""
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def _revision(database: Path) -> str | None:
    """The database's Alembic revision; None when it cannot be read."""
    try:
        with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return str(found[0][0]) if len(found) == 1 else None


def startup_checks_set(env: Mapping[str, str]) -> bool:
    """Whether the user set the server's start-up checks themselves (under any alias): then
    a start-up says nothing about the database, and radflow records nothing."""
    return any(
        word in name
        for name in env
        if name.startswith("PREFECT_")
        for word in ("MIGRATE_ON_START", "REGISTER_ON_START", "BLOCK_AUTO_REGISTRATION")
    )


def is_current(database: Path) -> bool:
    """Whether a server of this Prefect version made `database` current, and it is still the
    same database (its revision unchanged)."""
    try:
        recorded = json.loads(database.with_name(_CURRENT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(recorded, dict)
        and recorded.get("prefect") == prefect_version() is not None
        and recorded.get("revision") == _revision(database) is not None
    )


def mark_current(database: Path) -> None:
    """Record that `database` is current for this Prefect version (after a server's full
    start-up on it, or a copy of this version's template). Best effort, like the template."""
    revision, prefect = _revision(database), prefect_version()
    if revision is None or prefect is None:
        return
    marker = database.with_name(_CURRENT)
    part = _part(marker)
    try:
        part.write_text(json.dumps({"prefect": prefect, "revision": revision}), encoding="utf-8")
        os.replace(part, marker)
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink()


@dataclass(frozen=True)
class Seeded:
    """A database `seed` made, and whether it made its home folder too."""

    database: Path
    made_home: bool

    def undo(self) -> None:
        """Remove what the seeding (and `mark_current`, and a server stopped before it
        answered) left, so that a refused command leaves no Prefect home it did not find."""
        for name in (_CURRENT, *(self.database.name + s for s in ("", "-wal", "-shm", "-journal"))):
            with contextlib.suppress(OSError):
                self.database.with_name(name).unlink()
        if self.made_home:
            with contextlib.suppress(OSError):
                self.database.parent.rmdir()  # only if nothing else is in it


def seed(database: Path, source: Path) -> Seeded | None:
    """Copy `source` to `database` if there is no database there yet; None when not copied.

    The copy appears under its name at once (a hard link of a finished file), and never over
    a database another process has just made: `os.link` refuses an existing name."""
    if not source.is_file() or any(
        database.with_name(database.name + suffix).exists() for suffix in ("", "-wal", "-journal")
    ):
        return None
    made_home = not database.parent.exists()
    part = _part(database)
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, part)
        os.link(part, database)
        return Seeded(database, made_home)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            part.unlink()


def keep(database: Path, target: Path) -> None:
    """Save a consistent copy of the running server's new `database` as the template (once:
    an existing template stays). A failure leaves no template; the next new home migrates."""
    if target.exists():
        return
    part = _part(target)
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


@dataclass
class Prepared:
    """What `prepare` did to a server's Prefect home, and what waits for the server's first
    healthy answer (`answered`) or for a stop before it (`stopped_early`)."""

    env: dict[str, str]  # the server's environment additions
    seeded: Seeded | None = None  # undone if the server never answers
    mark: Path | None = None  # the database this server's full start-up makes current
    keep_as: Path | None = None  # and, when it migrated it from nothing, the template's path

    def answered(self) -> None:
        self.seeded = None  # in use now
        if self.mark is not None:
            if self.keep_as is not None:
                keep(self.mark, self.keep_as)
            mark_current(self.mark)

    def stopped_early(self) -> None:
        if self.seeded is not None:
            self.seeded.undo()


def prepare(env: Mapping[str, str]) -> Prepared:
    """Before a temporary server starts with `env`: seed its new home from the template, and
    let it skip the start-up checks on a database known to be current."""
    database, source = default_database(env), template(env)
    if database is None or source is None:
        return Prepared({})
    prepared = Prepared({})
    if not database.exists():
        prepared.seeded = seed(database, source)
        if prepared.seeded is not None:
            mark_current(database)
        elif not source.exists():
            prepared.keep_as = source
    if is_current(database):
        prepared.env = dict(STARTUP_CHECKS_OFF)
    elif not startup_checks_set(env):
        prepared.mark = database
    return prepared
