"""Prefect's tag-limit clients, connected once per process before a flow's tasks use them."""

from __future__ import annotations

from typing import Any

from prefect.tasks import Task

_CONNECTED_TAG_SETS: set[tuple[str, ...]] = set()


def connect_tag_checks(*stage_tasks: Task[..., Any]) -> None:
    """Check each task's stage tag with Prefect once per process, before a flow uses it.

    Prefect checks the concurrency limits of every tagged task run through a client made when
    its tag set is first used, and 3.8 retries a lost connection only on a client that has
    connected before: a stage whose first task starts while the server restarts fails at once.
    Connected here, the same clients wait a restart out (about a minute of backoff). The sets
    are checked side by side (each costs a round trip and a new client). Tag sets with a real
    limit (`gpu`) are left alone: checking them would take a slot.

    Prefect's private `prefect.concurrency._sync.concurrency` is used for its
    `suppress_warnings`: the public `prefect.concurrency.sync.concurrency` (3.8) logs a warning
    into the flow run for every tag without a limit, that is, for every stage."""
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
