"""A new Prefect home's database comes from the template the first temporary server left,
and flows run on it (flows/runtime/prefect_db.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
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
    with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as db:
        return db.execute(query).fetchall()


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
