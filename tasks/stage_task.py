"""The uniform part of every stage's task, derived once from the stage's descriptor.

A stage module (`radflow.stages.<name>`) says its `NAME`, its `address(settings, *inputs)` and
its `run(lake, settings, *inputs)`. From these, `stage_task` makes the Prefect task: its
parameters are the stage's inputs, its cache key is the output's address in this lake (a
`CachePolicy`, so a re-run shows Cached), its run name and tag come from the name, a None input
(a study set aside upstream) passes through, bad input becomes a quarantine record and an
event while the flow goes on, and the process works on `studies_per_stage` studies at a time
in the stage (`radflow.stage_slots`). What these rules are lives in radflow; this module only
hands them to Prefect.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from prefect import get_run_logger
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.runtime import task_run
from prefect.tasks import Task

from radflow.keys import short_id
from radflow.lake.records import QuarantineRecord
from radflow.stage_slots import stage_slots
from radflow.stages import Stage, cache_key, run_stage, still_there
from tasks.runtime import lake, settings, task

if TYPE_CHECKING:
    from prefect.types import DateTime


@dataclass
class LakeAddress(CachePolicy):
    """Prefect's cache key is the output's content address (within this lake): a re-run of the
    same inputs and settings is Cached, a change to either is not. No key (no caching) when an
    input is None: the task only passes the None on.

    Prefect keeps its cache records in its own storage (`PREFECT_HOME/storage`), not in the
    lake: after a user deletes the lake (or the cache folder) to start again, a record would
    still say Cached for outputs that are gone, and the next stage would fail on a missing
    object. So a record counts only while `holds(its value)` (a None: while the input's
    quarantine record is there): otherwise it is expired (Prefect's own record expiration)
    and the task runs again."""

    name: str = ""
    address: Callable[..., str] | None = None
    holds: Callable[[Any], bool] | None = None

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        if self.address is None or any(v is None for v in inputs.values()):
            return None
        key = cache_key(lake(), self.name, self.address(**inputs))
        records = task_ctx.result_store
        first = str(next(iter(inputs.values()), ""))  # what a None output set aside
        if records.exists(key) and not still_there(
            lake(), self.name, records.read(key).result, first, self.holds
        ):
            past = datetime.now(UTC) - timedelta(seconds=1)  # Prefect's DateTime is a datetime
            records.write(obj=None, key=key, expiration=cast("DateTime", past))
        return key


def run_name(name: str) -> Callable[[], str]:
    """`<stage>-<short hash of the first input key>`: pseudonymous, never a raw key or a UID."""

    def make() -> str:
        params = task_run.parameters
        first = next(iter(params.values()), "") if params else ""
        return f"{name}-{short_id(str(first))}" if first else name

    return make


def announce_quarantine(record_key: str, stage: str, reason: str) -> None:
    """A `radflow.study.quarantined` event: the record's hash names the input, the reason is
    radflow's own words (no PHI)."""
    from prefect.events import emit_event

    emit_event(
        event="radflow.study.quarantined",
        resource={"prefect.resource.id": f"radflow.input.{record_key.rsplit('/', 1)[-1][:24]}"},
        payload={"stage": stage, "reason": reason, "record": record_key},
    )


def quarantine(record: QuarantineRecord) -> str:
    """Write the record and send its event; returns the record's key."""
    where = lake().quarantine(record)
    announce_quarantine(where, record.stage, record.reason)
    return where


def stage_task(
    stage: Stage, *, tags: tuple[str, ...] = (), after: Callable[..., None] | None = None
) -> Task[..., str | None]:
    """The per-study task of `stage`; its parameters are the names of `stage.run`'s inputs
    (the first is the input a quarantine record names). `after(output, *inputs)` runs when the
    stage produced an output (an artifact for people, say)."""
    inputs = list(inspect.signature(stage.run).parameters.values())[2:]

    def body(*keys: str | None) -> str | None:
        with stage_slots(stage.NAME, settings().studies_per_stage):
            outcome = run_stage(stage, lake(), settings(), keys)
        if (record := outcome.quarantined) is not None:
            announce_quarantine(record.store_key, record.stage, record.reason)
            get_run_logger().warning(
                "quarantined %s: %s (%s)", short_id(str(keys[0])), record.reason, record.store_key
            )
        if outcome.key is not None and after is not None:
            after(outcome.key, *keys)
        return outcome.key

    # Prefect binds a task's arguments by its function's signature: give the body the stage's.
    body.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p.replace(annotation=str | None) for p in inputs], return_annotation=str | None
    )
    body.__name__ = body.__qualname__ = stage.NAME
    body.__doc__ = (stage.run.__doc__ or "").strip() or None
    made: Task[..., str | None] = task(
        name=stage.NAME,
        cache_policy=LakeAddress(
            name=stage.NAME, address=lambda **keys: stage.address(settings(), *keys.values())
        ),
        task_run_name=run_name(stage.NAME),
        tags=[f"stage:{stage.NAME}", *tags],
    )(body)
    return made
