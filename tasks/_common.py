"""What every task shares: settings (the secret included), the lake, cache keys, run names,
and `task`: Prefect's decorator with the body's exceptions scrubbed of PHI."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import Any, ParamSpec, TypeVar

from prefect import task as prefect_task
from prefect.context import TaskRunContext
from prefect.runtime import task_run
from prefect.tasks import Task

from radflow.config import Settings, load_settings
from radflow.errors import ConfigError
from radflow.keys import sha256_bytes, short_id
from radflow.privacy import scrub_exceptions
from radflow.store import ObjectStore, open_store

P = ParamSpec("P")
R = TypeVar("R")


@cache
def settings() -> Settings:
    """Read once per worker process from RADFLOW_* and radflow.toml: never a task parameter,
    so the secret never reaches Prefect. With RADFLOW_SECRET_BLOCK (and no secret or secret
    file) the secret is the value of that Prefect Secret block, read here because radflow's
    core never imports Prefect."""
    s = load_settings()
    if s.secret_block and s.secret is None and s.secret_file is None:
        from prefect.blocks.system import Secret

        try:
            # In a sync caller Block.load returns the block; `_sync` makes that explicit.
            block: Any = Secret.load(s.secret_block, _sync=True)  # type: ignore[call-arg]
            value = block.get()
        except Exception:  # its message names the block only, but may hold a server's URL
            raise ConfigError(
                "RADFLOW_SECRET_BLOCK", "no readable Prefect Secret block of that name"
            ) from None
        s = s.with_secret(str(value))
    return s


def stage_tags_on() -> bool:
    """RADFLOW_STAGE_TAGS (true by default): a `stage:<name>` tag on every task run, to filter
    by in the UI. Prefect 3.8 checks each tagged run's concurrency limits with the server, one
    run after another per tag set: on the temporary server of a one-process run that is about
    2 s per stage (the warm 40-study demo: 36 s with the tags, 11 s without), so `radflow
    demo` turns them off. Read when the task modules are imported."""
    return os.environ.get("RADFLOW_STAGE_TAGS", "true").strip().lower() not in ("0", "false", "no")


def task(**options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """`prefect.task(**options)`, with the body's unexpected exceptions scrubbed before
    Prefect stores or logs them (`radflow.privacy.scrub_exceptions`; the stage is the
    function's name, the original traceback goes to RADFLOW_CACHE_DIR/errors/)."""

    if not stage_tags_on():
        options["tags"] = [t for t in options.get("tags", []) if not t.startswith("stage:")]

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        scrubbed = scrub_exceptions(f.__name__, lambda: settings().cache_dir)(f)
        made: Task[P, R] = prefect_task(**options)(scrubbed)
        return made

    return decorate


@cache
def lake() -> ObjectStore:
    return open_store(settings().store_url, settings().s3_options())


def cache_key(
    stage: str, output_address: Callable[..., str]
) -> Callable[[TaskRunContext, dict[str, Any]], str]:
    """Prefect's cache key is the output's content address (within this lake): a re-run of the
    same inputs and parameters is Cached, a change to either is not."""

    def key(_: TaskRunContext, parameters: dict[str, Any]) -> str:
        addr = output_address(**parameters)
        return f"radflow-{stage}-{sha256_bytes(f'{lake().url}|{addr}'.encode())}"

    return key


def run_name(stage: str) -> Callable[[], str]:
    """`<stage>-<short hash of the first input key>`: pseudonymous, never a raw key or a UID."""

    def name() -> str:
        params = task_run.parameters
        first = next(iter(params.values()), "") if params else ""
        return f"{stage}-{short_id(str(first))}" if first else stage

    return name


def quarantine_on_error(stage: str, input_key: str, fn: Callable[[], str]) -> str | None:
    """Run a stage; bad input becomes a quarantine record and None, and the flow goes on."""
    from prefect.logging import get_run_logger

    from radflow.errors import QuarantineError
    from radflow.stages.quarantine import record_error

    try:
        return fn()
    except QuarantineError as err:
        where = record_error(lake(), stage, input_key, err)
        get_run_logger().warning("quarantined %s: %s (%s)", short_id(input_key), err.reason, where)
        announce_quarantine(where, stage, err.reason)
        return None


def announce_quarantine(record_key: str, stage: str, reason: str) -> None:
    """A `radflow.study.quarantined` event: the record's hash names the input, the reason is
    radflow's own words (no PHI)."""
    from prefect.events import emit_event

    emit_event(
        event="radflow.study.quarantined",
        resource={"prefect.resource.id": f"radflow.input.{record_key.rsplit('/', 1)[-1][:24]}"},
        payload={"stage": stage, "reason": reason, "record": record_key},
    )


_CONNECTED_TAG_SETS: set[tuple[str, ...]] = set()


def connect_tag_checks(*stage_tasks: Any) -> None:
    """Check each task's stage tag with Prefect once per process, before a flow uses it.

    Prefect checks the concurrency limits of every tagged task run through a client made when
    its tag set is first used, and 3.8 retries a lost connection only on a client that has
    connected before: a stage whose first task starts while the server restarts fails at once.
    Connected here, the same clients wait a restart out (about a minute of backoff). The sets
    are checked side by side (each costs a round trip and a new client). Tag sets with a real
    limit (`gpu`) are left alone: checking them would take a slot."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect.concurrency._sync import concurrency

    def check(names: tuple[str, ...]) -> None:
        with concurrency(list(names), occupy=1, suppress_warnings=True):
            _CONNECTED_TAG_SETS.add(names)

    wanted = {tuple(sorted(f"tag:{tag}" for tag in t.tags)) for t in stage_tasks}
    todo = [n for n in wanted if n and "tag:gpu" not in n and n not in _CONNECTED_TAG_SETS]
    if todo:
        with ThreadPoolExecutor(len(todo)) as pool:
            list(pool.map(check, todo))
