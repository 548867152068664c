"""The segmentation model's test Dice on several patient-level splits of one lake, for a few
settings side by side: what a settings change does beyond the one split a demo workdir has.

Usage: python bench/seg_splits_bench.py LAKE_URL [--seeds 0 1 2]
           [--settings NAME=JSON ...]

LAKE_URL: a lake `radflow demo` or `radflow train` made (e.g. file:///tmp/demo/lake); its
segmentation champion names the dataset. Each seed is the training seed, which also draws the
split (`training_table`), so seed s is the split a lake trained with `RADFLOW_TRAIN__SEED=s`
would have (the other train settings are this environment's, as `radflow train` would read
them, not the champion card's). Each setting (default: the defaults with and without the
texture channel) is trained in this process on the fit patients' annotated studies,
early-stopped on the validation patients', and evaluated on the test patients' exactly as
`radflow train` does (`evaluate_segmentation`: mirrored sliding windows, largest component,
volume checks).
Nothing is written to the lake. Prints a Markdown table and, per run, a JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radflow.config import Settings  # noqa: E402
from radflow.lake import Lake  # noqa: E402
from radflow.segmentation.params import SegmentationParams  # noqa: E402
from radflow.segmentation.train import train_segmentation  # noqa: E402
from radflow.stages.segmentation import (  # noqa: E402
    MIN_FIT_STUDIES,
    annotated_split,
    cases,
    evaluate_segmentation,
)
from radflow.store import open_store  # noqa: E402

DEFAULT_SETTINGS = {"texture channel": {}, "no texture channel": {"texture_channel": False}}


def run(lake: Lake, dataset: str, seed: int, overrides: dict[str, object]) -> dict[str, object]:
    settings = Settings().train.model_copy(update={"seed": seed})
    params = SegmentationParams(**{**settings.segmentation.model_dump(), **overrides})
    fit, validation, test = annotated_split(lake, dataset, settings)
    if len(fit) < MIN_FIT_STUDIES or not test:
        sys.exit(f"seed {seed}: {len(fit)} fit and {len(test)} test studies annotated, too few")
    spacing = tuple(float(s) for s in lake.image(fit[0].volume, "whole").GetSpacing())
    started = time.perf_counter()
    trained = train_segmentation(
        cases(lake, fit, params),
        cases(lake, validation, params),
        params,
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        seed=seed,
        processes=1,
    )
    seconds = time.perf_counter() - started
    evaluation, _ = evaluate_segmentation(lake, trained.model, test, params)
    return {
        "seed": seed,
        "studies": [len(fit), len(validation), len(test)],
        "test_dice": evaluation.dice.mean,
        "per_study": [round(c.dice, 3) for c in evaluation.cases],
        "best_epoch": trained.best_epoch,
        "epochs_run": trained.epochs_run,
        "training_s": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lake", help="the lake's URL, e.g. file:///tmp/demo/lake")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--settings",
        nargs="+",
        metavar="NAME=JSON",
        help="SegmentationParams overrides per row, e.g. 'wide={\"window_width\": 400}'",
    )
    args = parser.parse_args()
    wanted = DEFAULT_SETTINGS
    if args.settings:
        wanted = {}
        for item in args.settings:
            name, _, text = item.partition("=")
            wanted[name] = json.loads(text or "{}")
            unknown = set(wanted[name]) - set(SegmentationParams.model_fields)
            if unknown:
                parser.error(f"{name}: not a SegmentationParams field: {sorted(unknown)}")
    lake = Lake(open_store(args.lake, {}))
    champion = lake.segmentation_champion()
    if champion is None:
        sys.exit(f"{args.lake}: no segmentation champion (run radflow demo or train first)")
    dataset = lake.segmentation_card(champion).dataset
    table: dict[str, list[dict[str, object]]] = {}
    for name, overrides in wanted.items():
        for seed in args.seeds:
            found = run(lake, dataset, seed, overrides)
            print(json.dumps({"settings": name, **found}), flush=True)
            table.setdefault(name, []).append(found)
    seeds = " | ".join(f"seed {s}" for s in args.seeds)
    print(f"\n| settings | {seeds} | mean |\n| --- |{' ---: |' * (len(args.seeds) + 1)}")
    for name, runs in table.items():
        dice = [float(r["test_dice"]) for r in runs]  # type: ignore[arg-type]
        cells = " | ".join(f"{d:.3f}" for d in dice)
        print(f"| {name} | {cells} | {sum(dice) / len(dice):.3f} |")


if __name__ == "__main__":
    main()
