"""Shared pytest fixtures.

Object storage
--------------
`moto_server` runs moto's standalone S3 server over real HTTP for the whole session;
`s3_bucket` gives each test a fresh bucket on it; `s3_store` and `local_store` are the two
`ObjectStore` kinds; `store` is parametrised over both so one contract suite covers each.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from radflow.store import LocalStore, ObjectStore, S3Store

if TYPE_CHECKING:
    from support.lakes import IngestedLake, TrainedLake

# Prefect must never touch the developer's ~/.prefect, phone home, or time out on a first
# start of its temporary server: set before any test module imports prefect.
_PREFECT_TEST_HOME = Path(os.environ.get("RADFLOW_TEST_PREFECT_HOME", "/tmp")) / (
    f"radflow-test-prefect-{os.getpid()}"
)
os.environ["PREFECT_HOME"] = str(_PREFECT_TEST_HOME)
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")
# Stage tags are for filtering runs in a UI: `radflow serve`'s stack keeps them, and
# tests/stack/test_orchestration.py checks every scoring task run carries its stage's. The
# in-process runs here go without, as a command's own temporary server does: on the SQLite
# test server each tagged run's concurrency check can wait about 2 s for a lock.
os.environ.setdefault("RADFLOW_STAGE_TAGS", "false")
# The synthetic studies most tests ingest are the demo's kind: bright lesions the threshold
# rule finds, mostly without annotations. Like `radflow demo`, the suite lists the rule as
# the last ROI source; tests of the default (no rule) unset it. Subprocesses that start from
# a clean environment get it from `ROI_SOURCES_WITH_RULE`.
ROI_SOURCES_WITH_RULE = '["annotation", "model", "rule"]'
os.environ.setdefault("RADFLOW_PREPROCESS__ROI_SOURCES", ROI_SOURCES_WITH_RULE)
# pytest-xdist runs one worker per core: a worker's torch on both cores would make the two
# spin against each other (OpenMP busy-waits), several times slower than one thread each.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
# A flow test that trains on annotated studies trains a segmentation model too: briefly here
# (its quality is tested where it is the point: tests/unit/stages/test_segmentation_stage.py
# and tests/flow/test_segmentation_scoring.py set their own settings).
SEGMENTATION_FOR_TESTS = {
    "RADFLOW_TRAIN__SEGMENTATION__EPOCHS": "3",
    "RADFLOW_TRAIN__SEGMENTATION__SAMPLES_PER_EPOCH": "8",
}
for _name, _value in SEGMENTATION_FOR_TESTS.items():
    os.environ.setdefault(_name, _value)

# ---------------------------------------------------------------------------------- tiers

TIERS = ("flow", "stack")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder is the tier: tests under tests/flow/ carry the `flow` marker, those under
    tests/stack/ `stack`, the unit tests under tests/unit/ neither. In one process the unit
    tier runs first, then flow, then stack: the quick ones fail first. Under pytest-xdist the
    order is reversed, as the workers take the modules in this order (with
    `--no-loadscope-reorder`, the Makefile's): the long stack modules start first and the
    short unit ones fill the workers' ends, where a long module started last ran alone for
    over a minute. The sort is stable: each module's order, and pytest's grouping of
    parametrised fixtures, stay as they were."""
    root = Path(__file__).parent
    tiers: dict[str, int] = {}
    for item in items:
        folder = item.path.relative_to(root).parts[0]
        want = {folder} & set(TIERS)
        have = {mark.name for mark in item.iter_markers()} & set(TIERS)
        if have != want:
            raise pytest.UsageError(
                f"{item.nodeid}: marked {sorted(have) or 'unit'} but lives in tests/{folder}/"
            )
        tiers[item.nodeid] = 1 + TIERS.index(folder) if want else 0
    heaviest_first = "PYTEST_XDIST_WORKER" in os.environ
    items.sort(key=lambda item: -tiers[item.nodeid] if heaviest_first else tiers[item.nodeid])


# --------------------------------------------------------------------------- object storage

S3_REGION = "us-east-1"
S3_STORE_PREFIX = "lake"

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": S3_REGION,
}
# Anything on the developer's machine that could send boto3 elsewhere or break it.
_STRAY_AWS_ENV = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of moto's S3 server on localhost, with fake AWS credentials in the env."""
    from moto.server import ThreadedMotoServer

    aws_home = tmp_path_factory.mktemp("aws-home")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        for name in _STRAY_AWS_ENV:
            mp.delenv(name, raising=False)
        # No ~/.aws config or credentials file may leak in.
        mp.setenv("AWS_CONFIG_FILE", str(aws_home / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_home / "credentials"))
        # Never route the local server through a proxy.
        for name in ("NO_PROXY", "no_proxy"):
            mp.setenv(name, "127.0.0.1,localhost")

        port = _free_port()
        # Its request lines would go through whatever handlers Prefect configured last,
        # some bound to streams a finished test has closed.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_server: str) -> Any:
    """A raw boto3 S3 client on the moto server, for setup and checks that bypass `S3Store`."""
    return boto3.session.Session().client("s3", endpoint_url=moto_server, region_name=S3_REGION)


@pytest.fixture
def s3_bucket(moto_server: str, s3_client: Any) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket on the moto server."""
    name = f"radflow-test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    yield name


@pytest.fixture
def s3_store(moto_server: str, s3_bucket: str) -> S3Store:
    """An `S3Store` on a fresh bucket, under the prefix `lake/`."""
    return S3Store(s3_bucket, S3_STORE_PREFIX, endpoint_url=moto_server, region=S3_REGION)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    """A `LocalStore` rooted at `tmp_path / "lake"`."""
    return LocalStore(tmp_path / "lake")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each kind of `ObjectStore` in turn: the contract suite runs once per kind."""
    fixture = {"local": "local_store", "s3": "s3_store"}[request.param]
    result: ObjectStore = request.getfixturevalue(fixture)
    return result


# ------------------------------------------------------------------- Prefect and the pipeline


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One real (temporary) Prefect server for the whole session: it takes 20-25 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def pipeline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """RADFLOW_* settings for one test: a local lake, a cache and a secret under tmp_path."""
    from tasks import runtime as _common

    secret = tmp_path / "secret.key"
    secret.write_text("test-secret-" + "0123456789abcdef" * 2)
    secret.chmod(0o600)
    monkeypatch.setenv("RADFLOW_STORE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("RADFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RADFLOW_SECRET_FILE", str(secret))
    monkeypatch.setenv("RADFLOW_DEID__REID_DIR", str(tmp_path / "reid"))
    _common.settings.cache_clear()
    _common.lake.cache_clear()
    yield tmp_path
    _common.settings.cache_clear()
    _common.lake.cache_clear()


# ------------------------------------------------------------------------ lakes, built once


@pytest.fixture(scope="session")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> IngestedLake:
    """12 studies ingested by the stages (no Prefect): labels, volumes, features, catalog.
    Shared by the session, so read only: a test that writes takes `ingested.copy(tmp_path)`."""
    from support.lakes import ingested_lake

    with _without_radflow_settings():
        return ingested_lake(tmp_path_factory.mktemp("ingested"))


@pytest.fixture(scope="session")
def trained(ingested: IngestedLake, tmp_path_factory: pytest.TempPathFactory) -> TrainedLake:
    """`ingested`, copied and trained by the stages to a champion. Read only, as `ingested`."""
    from support.lakes import train

    with _without_radflow_settings():
        return train(ingested.copy(tmp_path_factory.mktemp("trained")))


@contextmanager
def _without_radflow_settings() -> Iterator[None]:
    """A session lake is built with the suite's defaults (the defaults and the rule as the
    last ROI source), whatever the test that asks first has set; the suite's own settings are
    back once it is built, for the tests after it (tests/unit/test_suite_settings.py)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("RADFLOW_")]:
            mp.delenv(name)
        mp.setenv("RADFLOW_PREPROCESS__ROI_SOURCES", ROI_SOURCES_WITH_RULE)
        yield


# --------------------------------------------------------------------------- system tools

# Installed by `make test-deps`, never by a test: a missing one fails the test with this line.
MISSING_TOOL = "{what} is not installed: run `make test-deps`"


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    """Debian's Chromium and poppler's pdftoppm."""
    import shutil

    found = {command: shutil.which(command) for command in ("chromium", "pdftoppm")}
    missing = [command for command, path in found.items() if path is None]
    if missing:
        pytest.fail(MISSING_TOOL.format(what=" and ".join(missing)), pytrace=False)
    return {command: str(path) for command, path in found.items()}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server (Debian's `postgresql`) on a free loopback port with a throwaway
    data directory; the URL of an empty database `prefect`."""
    from support.postgres import bindir, throwaway_postgres

    if bindir() is None:
        pytest.fail(MISSING_TOOL.format(what="PostgreSQL's server"), pytrace=False)
    with throwaway_postgres() as url:
        yield url
