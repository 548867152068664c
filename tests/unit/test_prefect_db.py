"""A new Prefect home's database from the template: which database is Prefect's default, a
copy that never lands on a database another process made, and a consistent template taken
while its server writes."""

from __future__ import annotations

import json
import sqlite3
import threading
from importlib.metadata import version
from pathlib import Path

from flows.runtime import prefect_db


def test_only_prefects_default_database_is_touched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert prefect_db.default_database({"PREFECT_HOME": str(home)}) == home / "prefect.db"
    for name in (
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_DATABASE_DRIVER",
        "PREFECT_SERVER_DATABASE_HOST",
        "PREFECT_SERVER_DATABASE_NAME",
    ):
        assert prefect_db.default_database({"PREFECT_HOME": str(home), name: "x"}) is None
    # A database setting that does not move the file leaves it Prefect's default.
    timeout = {"PREFECT_HOME": str(home), "PREFECT_SERVER_DATABASE_TIMEOUT": "10"}
    assert prefect_db.default_database(timeout) == home / "prefect.db"
    home.mkdir()
    (home / "profiles.toml").write_text(
        '[profiles.work]\nPREFECT_API_DATABASE_CONNECTION_URL = "postgresql+asyncpg://db/p"\n'
    )
    assert prefect_db.default_database({"PREFECT_HOME": str(home)}) is None
    elsewhere = tmp_path / "profiles.toml"
    elsewhere.write_text('[profiles.default]\nPREFECT_LOGGING_LEVEL = "INFO"\n')
    env = {"PREFECT_HOME": str(home), "PREFECT_PROFILES_PATH": str(elsewhere)}
    assert prefect_db.default_database(env) == home / "prefect.db"


def test_the_template_is_per_prefect_version_in_the_users_cache(tmp_path: Path) -> None:
    found = prefect_db.template({"XDG_CACHE_HOME": str(tmp_path)})
    assert found == tmp_path / "radflow" / f"prefect-{version('prefect')}.db"


def test_a_new_home_gets_a_copy_and_an_existing_database_is_never_replaced(
    tmp_path: Path,
) -> None:
    source = tmp_path / "template.db"
    source.write_bytes(b"template bytes")
    database = tmp_path / "home" / "prefect.db"
    assert prefect_db.seed(database, source) == prefect_db.Seeded(database, made_home=True)
    assert database.read_bytes() == b"template bytes"
    assert sorted(p.name for p in database.parent.iterdir()) == ["prefect.db"]  # no .part left
    database.write_bytes(b"the user's runs")
    assert prefect_db.seed(database, source) is None
    assert database.read_bytes() == b"the user's runs"
    # A log or journal without its database (a crash, a half-deleted home): not seeded.
    for log in ("prefect.db-wal", "prefect.db-journal"):
        other = tmp_path / log / "prefect.db"
        other.parent.mkdir()
        other.with_name(log).write_bytes(b"log")
        assert prefect_db.seed(other, source) is None and not other.exists()
    assert prefect_db.seed(tmp_path / "third" / "prefect.db", tmp_path / "missing.db") is None


def _database(path: Path) -> sqlite3.Connection:
    """A database as Prefect's server leaves it: write-ahead log, schema, installation rows."""
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE alembic_version (version_num TEXT)")
    db.execute("INSERT INTO alembic_version VALUES ('a3b9c7d2e5f1')")
    db.execute("CREATE TABLE configuration (key TEXT, value TEXT)")
    db.executemany(
        "INSERT INTO configuration VALUES (?, ?)",
        [("TELEMETRY_SESSION", "s-1"), ("ENCRYPTION_KEY", "k-1"), ("OTHER", "kept")],
    )
    db.execute("CREATE TABLE block_type (id INTEGER)")
    db.executemany("INSERT INTO block_type VALUES (?)", [(i,) for i in range(500)])
    db.commit()
    return db


def test_the_template_is_a_consistent_copy_without_the_installations_rows(
    tmp_path: Path,
) -> None:
    live = _database(tmp_path / "prefect.db")
    stop = threading.Event()

    def writes() -> None:  # the server goes on writing while the copy is taken
        n = 500
        while not stop.is_set():
            live.execute("INSERT INTO block_type VALUES (?)", (n,))
            live.commit()
            n += 1

    writer = threading.Thread(target=writes)
    writer.start()
    target = tmp_path / "cache" / "radflow" / "prefect-x.db"
    try:
        prefect_db.keep(tmp_path / "prefect.db", target)
    finally:
        stop.set()
        writer.join()
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert copy.execute("SELECT * FROM alembic_version").fetchall() == [("a3b9c7d2e5f1",)]
    assert copy.execute("SELECT * FROM configuration").fetchall() == [("OTHER", "kept")]
    ids = [i for (i,) in copy.execute("SELECT id FROM block_type ORDER BY id")]
    assert ids == list(range(len(ids))) and len(ids) >= 500  # a prefix: no torn page
    copy.close()
    assert sorted(p.name for p in target.parent.iterdir()) == ["prefect-x.db"]
    # Kept once: a template that exists is never rewritten.
    before = target.read_bytes()
    live.execute("INSERT INTO configuration VALUES ('TELEMETRY_SESSION', 's-2')")
    live.commit()
    prefect_db.keep(tmp_path / "prefect.db", target)
    assert target.read_bytes() == before
    live.close()


def test_a_template_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    _database(tmp_path / "prefect.db").close()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    prefect_db.keep(tmp_path / "prefect.db", blocked / "radflow" / "prefect-x.db")
    prefect_db.keep(tmp_path / "missing.db", tmp_path / "t" / "prefect-x.db")
    assert not (tmp_path / "t" / "prefect-x.db").exists()
    assert [p.name for p in (tmp_path / "t").iterdir()] == []


def test_a_database_is_current_for_one_prefect_version_and_one_revision(tmp_path: Path) -> None:
    database = tmp_path / "prefect.db"
    assert prefect_db.is_current(database) is False  # no database, no record
    _database(database).close()
    assert prefect_db.is_current(database) is False  # no record yet
    prefect_db.mark_current(database)
    assert prefect_db.is_current(database) is True
    record = database.with_name("current.json")
    assert json.loads(record.read_text()) == {
        "prefect": version("prefect"),
        "revision": "a3b9c7d2e5f1",
    }
    # Another database in its place (another revision), or another Prefect version.
    with sqlite3.connect(database) as db:
        db.execute("UPDATE alembic_version SET version_num = 'older'")
    assert prefect_db.is_current(database) is False
    prefect_db.mark_current(database)
    assert prefect_db.is_current(database) is True
    record.write_text(json.dumps({"prefect": "3.0.0", "revision": "older"}))
    assert prefect_db.is_current(database) is False
    record.write_text("not json")
    assert prefect_db.is_current(database) is False
    prefect_db.mark_current(tmp_path / "missing.db")  # nothing to read: nothing recorded
    assert record.read_text() == "not json" and not (tmp_path / "missing.db").exists()


def test_start_up_checks_the_user_set_under_any_name_are_theirs() -> None:
    assert prefect_db.startup_checks_set({"PREFECT_HOME": "/h"}) is False
    for name in (
        "PREFECT_API_DATABASE_MIGRATE_ON_START",
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START",
        "PREFECT_API_BLOCKS_REGISTER_ON_START",
        "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION",
        "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION",
    ):
        assert prefect_db.startup_checks_set({name: "true"}) is True
    assert all(prefect_db.startup_checks_set({n: "false"}) for n in prefect_db.STARTUP_CHECKS_OFF)


def test_a_seeding_is_undone_to_the_folder_it_found(tmp_path: Path) -> None:
    source = tmp_path / "template.db"
    _database(source).close()
    new_home = tmp_path / "new" / "prefect.db"
    seeded = prefect_db.seed(new_home, source)
    assert seeded is not None
    prefect_db.mark_current(new_home)
    _database(tmp_path / "new" / "x.db").close()  # a server's -wal and -shm beside it
    (tmp_path / "new" / "x.db").rename(new_home.with_name("prefect.db-wal"))
    seeded.undo()
    assert not (tmp_path / "new").exists()
    # A home that was there stays, with what else it held.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "profiles.toml").write_text("")
    kept = prefect_db.seed(tmp_path / "old" / "prefect.db", source)
    assert kept == prefect_db.Seeded(tmp_path / "old" / "prefect.db", made_home=False)
    kept.undo()
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["profiles.toml"]


def test_prepare_seeds_a_new_home_and_lets_a_current_one_skip_the_checks(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"PREFECT_HOME": str(tmp_path / "first"), "XDG_CACHE_HOME": str(cache)}
    template = prefect_db.template(env)
    assert template is not None
    # No template yet: the server migrates; once it answers its database becomes the
    # template and is marked current (here a stand-in for what the server made).
    first = prefect_db.prepare(env)
    assert first.env == {} and first.seeded is None
    assert first.mark == tmp_path / "first" / "prefect.db" and first.keep_as == template
    (tmp_path / "first").mkdir()
    _database(tmp_path / "first" / "prefect.db").close()
    first.answered()
    assert template.is_file() and prefect_db.is_current(tmp_path / "first" / "prefect.db")
    # A second new home is seeded and current at once: the checks are off.
    env["PREFECT_HOME"] = str(tmp_path / "second")
    second = prefect_db.prepare(env)
    assert second.env == prefect_db.STARTUP_CHECKS_OFF and second.seeded is not None
    assert second.mark is None and second.keep_as is None
    second.stopped_early()  # a refused command: no home left behind
    assert not (tmp_path / "second").exists()
    # Checks the user set are theirs: nothing is recorded after such a start.
    env["PREFECT_HOME"] = str(tmp_path / "third")
    third = prefect_db.prepare(env | {"PREFECT_API_DATABASE_MIGRATE_ON_START": "false"})
    assert third.seeded is not None and third.env == prefect_db.STARTUP_CHECKS_OFF
    (tmp_path / "third" / "current.json").unlink()
    again = prefect_db.prepare(env | {"PREFECT_API_DATABASE_MIGRATE_ON_START": "false"})
    assert again.env == {} and again.mark is None
    # A configured database is never touched.
    configured = env | {"PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://db/p"}
    assert prefect_db.prepare(configured) == prefect_db.Prepared({})
