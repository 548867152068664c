"""What every task needs at run time: settings (the secret included), the lake, and `task`,
Prefect's decorator with the body's exceptions scrubbed of PHI."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, ParamSpec, TypeVar

from prefect import task as prefect_task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task

from radflow.config import Settings, load_settings
from radflow.errors import ConfigError
from radflow.lake import Lake
from radflow.privacy import scrub_exceptions
from radflow.store import open_store

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
            # `Block.load` returns the block in a sync caller (radflow's flows and tasks are all
            # sync) and a coroutine in an async one, which radflow never is.
            block: Any = Secret.load(s.secret_block)
            value = block.get()
        except Exception:  # its message names the block only, but may hold a server's URL
            raise ConfigError(
                "RADFLOW_SECRET_BLOCK",
                "no readable Prefect Secret block of that name",
                hint="create the Secret block on this Prefect server, or set RADFLOW_SECRET_FILE",
            ) from None
        s = s.with_secret(str(value))
    return s


@cache
def lake() -> Lake:
    return Lake(open_store(settings().store_url, settings().s3_options()))


def stage_tags(*tags: str) -> list[str]:
    """`tags`, less the `stage:` ones when RADFLOW_STAGE_TAGS is off (see `Settings.stage_tags`).
    Read when the task modules are imported: Prefect fixes a task's tags when it is made."""
    return [t for t in tags if load_settings().stage_tags or not t.startswith("stage:")]


def task(**options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """`prefect.task(**options)`, with the body's unexpected exceptions scrubbed before
    Prefect stores or logs them (`radflow.privacy.scrub_exceptions`; the stage is the
    function's name, the original traceback goes to RADFLOW_CACHE_DIR/errors/)."""
    options["tags"] = stage_tags(*options.get("tags", []))

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        scrubbed = scrub_exceptions(f.__name__, lambda: settings().cache_dir)(f)
        made: Task[P, R] = prefect_task(**options)(scrubbed)
        return made

    return decorate


def gpu_task(run_name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """The part of a stage that needs a GPU, as a task of its own tagged `gpu` (the tag of
    `radflow serve`'s concurrency limit, one slot per GPU), called from the stage's cached
    task: a cached stage returns without waiting for a slot, and only the work holds one.
    Never cached itself: the calling task's cache is the stage's."""
    return task(task_run_name=run_name, tags=["gpu"], cache_policy=NO_CACHE)
