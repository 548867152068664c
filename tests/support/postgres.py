"""A throwaway PostgreSQL server on a free loopback port, for the tests and benchmarks that run
Prefect's server as production would (Debian's `postgresql`, which `make test-deps` installs;
PostgreSQL refuses to run as root, so its files belong to the `postgres` user)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def bindir() -> str | None:
    """Where Debian keeps the server's programs (the Makefile's `test-deps` looks there too)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """The URL of an empty database `prefect` on a server that is gone afterwards."""
    bin_dir = bindir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's server is not installed: run `make test-deps`")
    data = Path(tempfile.mkdtemp(prefix="radflow-pg-"))
    shutil.chown(data, "postgres", "postgres")
    port = _free_port()

    def as_postgres(*args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120
        )

    as_postgres(f"{bin_dir}/initdb", "-D", str(data / "db"), "--auth=trust", "-U", "postgres")
    as_postgres(
        f"{bin_dir}/pg_ctl",
        "-D",
        str(data / "db"),
        "-l",
        str(data / "log"),
        "-o",
        f"-p {port} -c listen_addresses=127.0.0.1 -k {data}",
        "-w",
        "start",
    )
    try:
        as_postgres(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "prefect")
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        as_postgres(f"{bin_dir}/pg_ctl", "-D", str(data / "db"), "-m", "fast", "stop")
        shutil.rmtree(data, ignore_errors=True)
