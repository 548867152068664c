"""The demo's deliveries and its last words, without running it (tests/stack/test_demo.py
runs it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from support.lakes import IngestedLake

from radflow.demo import DemoLayout, demo_specs, ensure_inbox, roi_sources, split
from radflow.synth import SynthSpec, realistic


def test_the_demo_synthesizes_realistic_deliveries() -> None:
    train, new = demo_specs(40, seed=0)
    assert split(40) == (32, 8) and split(10) == (8, 2)
    fewer = {"thick_recons": 0.25, "reformats": 0.25}
    assert train == replace(realistic(SynthSpec(studies=32, seed=0)), **fewer)
    assert new == replace(realistic(SynthSpec(studies=8, seed=1_000_003)), **fewer, annotated=0.0)
    assert train.annotations == ("seg", "rtstruct") and 0 < train.soft_tissue_lesions < 1
    small = SynthSpec(rows=16, columns=16, slices=8)
    assert demo_specs(10, 3, small) == (
        SynthSpec(studies=8, rows=16, columns=16, slices=8, seed=3),
        SynthSpec(studies=2, rows=16, columns=16, slices=8, seed=1_000_006, annotated=0.0),
    )


def test_each_delivery_keeps_its_truth(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path)
    spec = realistic(SynthSpec(rows=16, columns=16, slices=8))
    assert ensure_inbox(layout, 10, 0, spec)
    train = layout.truth("delivery-train/").read_text().splitlines()
    new = layout.truth("delivery-new/").read_text().splitlines()
    assert (len(train), len(new)) == (1 + 8, 1 + 2)  # a header and a line per study
    assert not (tmp_path / "truth.csv").exists()
    assert not ensure_inbox(layout, 10, 0, spec)  # the same spec: nothing rewritten


def test_roi_sources_are_counted_from_the_feature_rows(ingested: IngestedLake) -> None:
    # The session lake is the suite's kind: bright lesions, no annotations, the rule listed.
    assert roi_sources(ingested.lake, ingested.rows) == {"rule": len(ingested.rows)}
    assert roi_sources(ingested.lake, []) == {}
