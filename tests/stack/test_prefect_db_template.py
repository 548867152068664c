"""A new Prefect home's database comes from the template the first temporary server left,
flows run on it, and a database known to be current skips the server's start-up checks
(flows/runtime/prefect_db.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

SCRIPT = """
from flows.runtime import server
proc = server.start_in_background()
server.wait(proc)
from prefect import flow
@flow
def one() -> int:
    return 1
print(one())
server._stop(proc)
"""


def _command(home: Path, cache: Path) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, "PREFECT_HOME": str(home), "XDG_CACHE_HOME": str(cache)},
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    return done.stdout


def _rows(database: Path, query: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
        return db.execute(query).fetchall()


def _forget_a_block_type(database: Path) -> None:
    with closing(sqlite3.connect(database)) as db:
        db.execute("DELETE FROM block_type WHERE slug = 'twilio-sms'")
        db.commit()


def test_a_new_prefect_home_starts_from_the_first_ones_database(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    template = cache / "radflow" / f"prefect-{version('prefect')}.db"
    assert _command(tmp_path / "first", cache) == "1\n"
    first = tmp_path / "first" / "prefect.db"
    revision = "SELECT version_num FROM alembic_version"
    assert _rows(template, revision) == _rows(first, revision) != []
    # No run in it, and nothing of the installation it came from.
    assert _rows(template, "SELECT count(*) FROM flow_run") == [(0,)]
    assert _rows(template, "SELECT key FROM configuration") == []

    assert _command(tmp_path / "second", cache) == "1\n"
    second = tmp_path / "second" / "prefect.db"
    # Copied, not migrated: the block types a migration registers anew get new ids.
    ids = "SELECT id FROM block_type ORDER BY id"
    assert len(_rows(second, ids)) > 10 and _rows(second, ids) == _rows(first, ids)
    assert _rows(second, "SELECT count(*) FROM flow_run") == [(1,)]
    assert _rows(template, "SELECT count(*) FROM flow_run") == [(0,)]

    # Seeded from this version's template, the home is current: the next server skips its
    # migration run and its block-type registration (a block type taken out stays out).
    assert json.loads((tmp_path / "second" / "current.json").read_text()) == {
        "prefect": version("prefect"),
        "revision": _rows(template, revision)[0][0],
    }
    twilio = "SELECT count(*) FROM block_type WHERE slug = 'twilio-sms'"
    _forget_a_block_type(second)
    assert _command(tmp_path / "second", cache) == "1\n"
    assert _rows(second, twilio) == [(0,)]
    # Without the record the checks run again (and register it back), and the record returns.
    (tmp_path / "second" / "current.json").unlink()
    assert _command(tmp_path / "second", cache) == "1\n"
    assert _rows(second, twilio) == [(1,)]
    assert (tmp_path / "second" / "current.json").exists()
