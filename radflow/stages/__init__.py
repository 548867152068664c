"""Stage functions: lake keys in, a lake key out.

Each one is what a Prefect task calls, and what a test calls directly: it computes its
output's content address, returns it at once if the lake already holds it, and otherwise
computes, writes through `radflow.lake.Lake`, and commits (the object written last marks a
multi-object output complete). A stage reads other stages' outputs only through the lake's
typed records, never by importing another stage.

The per-study stages (`anonymize`, `preprocess`, `features`, `score`, `report`) also share
one descriptor, from which `tasks.stage_task` derives their tasks: `NAME` (the task, its run
names, its `stage:` tag and its quarantine folder), `address(settings, *keys)` and
`run(lake, settings, *keys)`, the keys in the same order in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from radflow.errors import QuarantineError
from radflow.keys import sha256_bytes
from radflow.lake import Lake
from radflow.lake.records import QuarantineRecord

if TYPE_CHECKING:  # fetch is imported where the settings are not (see tests/unit/test_config.py)
    from radflow.config import Settings


class Stage(Protocol):
    """A per-study stage module: `address(settings, *keys)` and `run(lake, settings, *keys)`,
    with the same keys in the same order."""

    @property
    def NAME(self) -> str: ...

    @property
    def address(self) -> Callable[..., str]: ...

    @property
    def run(self) -> Callable[..., str]: ...


@dataclass(frozen=True)
class Outcome:
    """A stage's output key, or the record of why its first input was set aside (None and
    None: an input was already set aside upstream)."""

    key: str | None = None
    quarantined: QuarantineRecord | None = None


def run_stage(stage: Stage, lake: Lake, settings: Settings, keys: Sequence[str | None]) -> Outcome:
    """Run `stage` on `keys`; bad input becomes a quarantine record written to the lake."""
    present = [k for k in keys if k is not None]
    if len(present) != len(keys):
        return Outcome()
    try:
        return Outcome(key=stage.run(lake, settings, *present))
    except QuarantineError as err:
        # Named by the input's key alone, not the lake's URL: the same study set aside in a
        # lake elsewhere (a copy, a second demo workdir) gets the same record.
        record = QuarantineRecord.of_error("", present[0], stage.NAME, err)
        lake.quarantine(record)
        return Outcome(quarantined=record)


def cache_key(lake: Lake, stage: str, address: str) -> str:
    """The key of a stage output's cache record: its address within this lake (the same
    address in another lake is another output)."""
    return f"radflow-{stage}-{sha256_bytes(f'{lake.url}|{address}'.encode())}"


def still_there(
    lake: Lake,
    stage: str,
    output: object,
    first_input: str,
    holds: Callable[[Any], bool] | None = None,
) -> bool:
    """Whether a stage's earlier output still stands: a None (`run_stage` set the first
    input aside) while the input's quarantine record is there, any other output while
    `holds(output)` (by default, while the lake holds it)."""
    if output is None:
        return lake.quarantined(stage, first_input) is not None
    return (holds or lake.holds)(output)
