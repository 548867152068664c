"""What the `radflow` command shows while its flows run, and the summary it ends with.

A rich progress bar per delivery (studies done of N, with quarantined and failed counts) and
a bar of steps for training, on stderr and only when stderr is a terminal; while the bar is
up, Prefect's console handlers show warnings and errors only (its API handler, and so the
UI, still gets every log line). The per-delivery summaries are collected for the command's
last lines whether or not a bar was shown.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Self

from radflow import progress

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from radflow.delivery import DeliverySummary

# Prefect's logging settings by path (its logging.yml, handlers.console.level): the console
# handler only; the api handler, which feeds the UI, keeps every line.
_QUIET_CONSOLE = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


@dataclass
class DeliveryResult:
    """One delivery a run prepared: where (as the command was given it) and what came of it."""

    source: str
    prefix: str
    summary: DeliverySummary

    @property
    def location(self) -> str:
        return f"{self.source.rstrip('/')}/{self.prefix}".removeprefix("file://")


@dataclass
class ConsoleProgress:
    """A `radflow.progress` listener for the command's own process (see the module's doc)."""

    show: bool = field(default_factory=interactive)
    deliveries: list[DeliveryResult] = field(default_factory=list)
    _bar: Progress | None = None
    _task: TaskID | None = None
    _counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Prefect reads its logging settings when it is first imported: made before that.
        if self.show:
            for name, value in _QUIET_CONSOLE.items():
                os.environ.setdefault(name, value)

    def __enter__(self) -> Self:
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
        self._listening = progress.listening(self)
        self._listening.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._listening.__exit__(kind, error, trace)
        if self._bar is not None:
            self._bar.stop()

    def delivery_started(self, source: str, prefix: str, studies: int) -> None:
        self._counts = {"quarantined": 0, "failed": 0}
        if self._bar is not None:
            self._task = self._bar.add_task("studies", total=studies, extra="")

    def study_done(self, state: progress.StudyState) -> None:
        if state in self._counts:
            self._counts[state] += 1
        if self._bar is not None and self._task is not None:
            extra = ", ".join(f"{n} {what}" for what, n in self._counts.items() if n)
            self._bar.update(self._task, advance=1, extra=extra)

    def delivery_finished(self, source: str, prefix: str, summary: DeliverySummary) -> None:
        self.deliveries.append(DeliveryResult(source, prefix, summary))

    def step(self, name: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        if self._task is None or done == 0:
            self._task = self._bar.add_task("training", total=total, extra=name)
        self._bar.update(self._task, completed=done, extra=name)

    def summary_lines(self) -> list[str]:
        """Per delivery: where, and what came of its studies and files."""
        lines = []
        for result in self.deliveries:
            lines.append(f"delivery {result.location}")
            lines += [f"  {line}" for line in result.summary.lines()]
        return lines

    def empty(self) -> list[DeliveryResult]:
        """The deliveries that yielded no study."""
        return [r for r in self.deliveries if r.summary.prepared == 0]
