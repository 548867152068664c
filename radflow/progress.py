"""How a run tells the person at the console how far it is: per delivery, studies done of N.

Flows report here; nothing listens unless the `radflow` command started the run in its own
process (a deployment's run has no console, and Prefect's UI has its progress artifact).
The events carry counts and radflow's own reasons, and the delivery's location only as the
caller gave it: they stay in this process, never in the lake, a log or Prefect.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from radflow.delivery import DeliverySummary

StudyState = Literal["prepared", "quarantined", "failed"]


class Listener(Protocol):
    def delivery_started(self, source: str, prefix: str, studies: int) -> None: ...

    def study_done(self, state: StudyState) -> None: ...

    def delivery_finished(self, source: str, prefix: str, summary: DeliverySummary) -> None: ...

    def step(self, name: str, done: int, total: int) -> None: ...


_listeners: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """`listener` hears every run's progress in this process while the block runs."""
    _listeners.append(listener)
    try:
        yield listener
    finally:
        _listeners.remove(listener)


def delivery_started(source: str, prefix: str, studies: int) -> None:
    for listener in _listeners:
        listener.delivery_started(source, prefix, studies)


def study_done(state: StudyState) -> None:
    for listener in _listeners:
        listener.study_done(state)


def delivery_finished(source: str, prefix: str, summary: DeliverySummary) -> None:
    for listener in _listeners:
        listener.delivery_finished(source, prefix, summary)


def step(name: str, done: int, total: int) -> None:
    """A run without studies to count (training): `done` of `total` steps, now at `name`."""
    for listener in _listeners:
        listener.step(name, done, total)
