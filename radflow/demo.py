"""The demo's workdir: two synthetic deliveries (one labelled, to train on; one new, to score),
a lake, a cache and a demo secret, all under one folder."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from radflow.synth import SynthSpec, synthesize

TRAIN_DELIVERY = "delivery-train/"
NEW_DELIVERY = "delivery-new/"
_MARKER = ".radflow-demo.json"


@dataclass(frozen=True)
class DemoLayout:
    workdir: Path

    @property
    def inbox(self) -> Path:
        return self.workdir / "inbox"

    @property
    def lake(self) -> Path:
        return self.workdir / "lake"

    @property
    def cache(self) -> Path:
        return self.workdir / "cache"

    @property
    def reid(self) -> Path:
        """The re-identification map: beside the lake, never in it."""
        return self.workdir / "reid"

    @property
    def secret_file(self) -> Path:
        return self.workdir / "secret.key"

    @property
    def train_labels(self) -> Path:
        return self.workdir / "labels-train.csv"

    @property
    def new_labels(self) -> Path:
        """Ground truth of the new studies: the demo compares its scores with it; never ingested."""
        return self.workdir / "labels-new.csv"


def ensure_secret(path: Path) -> bool:
    """Create a random demo secret (mode 600) unless one exists; True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32))
    return True


def ensure_inbox(
    layout: DemoLayout, studies: int, seed: int, spec: SynthSpec | None = None
) -> bool:
    """Synthesize the two deliveries unless the same ones are there; True when written."""
    base = spec or SynthSpec(studies=studies, seed=seed)
    n_new = max(2, studies // 5)
    train = SynthSpec(**{**asdict(base), "studies": studies - n_new, "seed": seed})
    new = SynthSpec(**{**asdict(base), "studies": n_new, "seed": seed + 1_000_003})
    wanted = json.dumps({"train": asdict(train), "new": asdict(new)}, sort_keys=True)
    marker = layout.inbox / _MARKER
    if marker.exists() and marker.read_text() == wanted:
        return False
    synthesize(layout.inbox / TRAIN_DELIVERY, layout.train_labels, train)
    synthesize(layout.inbox / NEW_DELIVERY, layout.new_labels, new)
    marker.write_text(wanted)
    return True
