"""The demo's workdir: two synthetic deliveries (one labelled, to train on; one new, to score),
a lake, a cache and a demo secret, all under one folder.

The deliveries are like real ones (`radflow.synth.realistic`: topograms, reformats, thick
recons, a SEG or RTSTRUCT in most studies, soft-tissue lesions in half), and `radflow demo`
lists the threshold rule as the last ROI source (RADFLOW_PREPROCESS__ROI_SOURCES), so the
annotated studies train on their annotation and the bright unannotated ones on the rule. The
new studies carry no annotation (as arrivals never do): the segmentation model trained on the
annotated ones finds their ROI."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from radflow.lake import Lake
from radflow.synth import SynthSpec, realistic, synthesize

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

    def truth(self, delivery: str) -> Path:
        """What `synthesize` wrote into each study of `delivery` (lesion, annotation, series)."""
        return self.workdir / f"truth-{delivery.strip('/').removeprefix('delivery-')}.csv"


def ensure_secret(path: Path) -> bool:
    """Create a random demo secret (mode 600) unless one exists; True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32))
    return True


def split(studies: int) -> tuple[int, int]:
    """How many of the demo's studies are labelled (to train on) and how many new (to score)."""
    n_new = max(2, studies // 5)
    return studies - n_new, n_new


def roi_sources(lake: Lake, feature_keys: Sequence[str]) -> dict[str, int]:
    """How many prepared studies took their ROI from each source ("annotation:SEG", "rule"
    ...), as their feature rows record it."""
    return dict(sorted(Counter(lake.feature_row(k).roi_source for k in feature_keys).items()))


def scored_roi_sources(lake: Lake) -> dict[str, int]:
    """How many scored studies took their ROI from each source ("model:seg-…", "rule")."""
    found = Counter(lake.score(s.score).roi_source for s, _ in lake.scored_studies())
    return dict(sorted(found.items()))


def demo_specs(
    studies: int, seed: int, spec: SynthSpec | None = None
) -> tuple[SynthSpec, SynthSpec]:
    """The specs of the labelled and the new delivery: `spec`'s kind of studies, split by
    `split`, each delivery with its own seed; the new studies without annotations. Without
    `spec`, `realistic` studies, but with a 5 mm recon and a coronal reformat in a quarter
    of them rather than half, to keep the demo's time: each recon is one more registration
    (a third of the studies have a moved series to register already), each reformat 64 more
    images to de-identify and read."""
    base = spec or replace(
        realistic(SynthSpec(studies=studies, seed=seed)), thick_recons=0.25, reformats=0.25
    )
    n_train, n_new = split(studies)
    return (
        replace(base, studies=n_train, seed=seed),
        replace(base, studies=n_new, seed=seed + 1_000_003, annotated=0.0),
    )


def ensure_inbox(
    layout: DemoLayout, studies: int, seed: int, spec: SynthSpec | None = None
) -> bool:
    """Synthesize the two deliveries (`demo_specs`) unless the same ones are there; True
    when written."""
    train, new = demo_specs(studies, seed, spec)
    wanted = json.dumps({"train": asdict(train), "new": asdict(new)}, sort_keys=True)
    marker = layout.inbox / _MARKER
    if marker.exists() and marker.read_text() == wanted:
        return False
    for delivery, labels, part in (
        (TRAIN_DELIVERY, layout.train_labels, train),
        (NEW_DELIVERY, layout.new_labels, new),
    ):
        synthesize(layout.inbox / delivery, labels, part)
        truth = labels.parent / "truth.csv"  # both deliveries' labels share a folder
        if truth.exists():
            truth.replace(layout.truth(delivery))
    marker.write_text(wanted)
    return True
