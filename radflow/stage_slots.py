"""How many studies one process works on at once in each per-study stage.

Prefect's thread runner starts every mapped study at once. The per-study work gains nothing
from that: de-identification is Python holding the GIL, and ITK's filters already use every
core; N studies at once only hold N studies in memory and finish together, so the next stage
starts on none of them before the last is done. With one slot per stage the studies go
through the stages side by side instead (one study's registration while the next is
de-identified), memory stays one study per stage, and the first study is ready first.
Written here by hand: a semaphore per (stage, size) is all it takes, and Prefect's own
limits are server-side (a round trip per task run, and a tag per stage).
"""

from __future__ import annotations

import threading

_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_made = threading.Lock()


def stage_slots(stage: str, size: int) -> threading.BoundedSemaphore:
    """This process's `size` slots for `stage`'s work (`Settings.studies_per_stage`)."""
    with _made:
        return _slots.setdefault((stage, size), threading.BoundedSemaphore(size))
