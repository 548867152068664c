"""How often a demo-sized lake trains a model that fails its sanity checks, over many seeds.

Usage: python bench/demo_seed_sweep.py LAKE [--seeds 20] [--cnn]

LAKE is the `lake/` folder of a `radflow demo --workdir W --studies 10` run. Each seed fits
the candidates (lr, rf, gb; the CNN too with --cnn) and registers a model on a fresh copy of
that lake's dataset, as `radflow train` would with `RADFLOW_TRAIN__SEED`: another seed is
another patient-level split, which is what a new random demo secret (new pseudonyms) gives.
Prints one line per seed and the count of models that fail a sanity check (such a model is
never promoted, and the demo then has no champion to score with).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radflow.config import TrainSettings  # noqa: E402
from radflow.lake import Lake  # noqa: E402
from radflow.stages.candidates import fit_cnn_candidate, fit_feature_candidates  # noqa: E402
from radflow.stages.registry import register_model  # noqa: E402
from radflow.store import open_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("lake", type=Path)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--cnn", action="store_true", help="the CNN candidate too")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # ANOVA F on 2 fit rows divides by zero degrees
    datasets = sorted((args.lake / "datasets").glob("v*/*"))
    if len(datasets) != 1:
        sys.exit(f"expected one dataset under {args.lake}/datasets, found {len(datasets)}")
    dataset = str(datasets[0].relative_to(args.lake))
    candidates = ("lr", "rf", "gb", "cnn") if args.cnn else ("lr", "rf", "gb")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            copy = Path(tmp) / f"seed-{seed}"
            shutil.copytree(args.lake, copy, ignore=shutil.ignore_patterns("models", "candidates"))
            lake = Lake(open_store(copy.resolve().as_uri()))
            settings = TrainSettings(seed=seed, candidates=candidates)
            found = [fit_feature_candidates(lake, dataset, settings)]
            if args.cnn:
                found.append(fit_cnn_candidate(lake, dataset, settings))
            card = lake.card(register_model(lake, dataset, found, settings))
            bad = card.sanity.failed
            failed += bool(bad)
            print(
                f"seed {seed:3d}: {card.kind:8s} calibration {card.calibration.method:5s} "
                f"test AUC {card.evaluation.auc:.3f}  {'FAILS ' + ', '.join(bad) if bad else 'ok'}"
            )
    print(f"{failed} of {args.seeds} models fail a sanity check ({', '.join(candidates)})")


if __name__ == "__main__":
    main()
