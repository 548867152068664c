"""Lakes built by the real stages without Prefect: 12 studies ingested (labels, volumes,
features, catalog) in about 10 s, and trained to a champion in a few more.

The session builds each once (`ingested` and `trained` in tests/conftest.py); a test that writes
takes its own copy (`.copy(tmp_path)`, about a second)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

from radflow.config import Settings, TrainSettings, load_settings
from radflow.demo import ensure_secret
from radflow.imaging.pipelines import preprocessing
from radflow.lake import Lake
from radflow.stages.anonymize import anonymize_study
from radflow.stages.candidates import fit_feature_candidates
from radflow.stages.catalog import update_catalog
from radflow.stages.dataset import build_dataset
from radflow.stages.features import extract_features
from radflow.stages.fetch import fetch_delivery
from radflow.stages.labels import store_labels
from radflow.stages.preprocess import build_volume
from radflow.stages.registry import promote_if_better, register_model
from radflow.store import LocalStore
from radflow.synth import SynthSpec, SynthStudy, synthesize

SMALL = SynthSpec(studies=12, rows=40, columns=40, slices=16)


@dataclass(frozen=True)
class IngestedLake:
    """`lake` at `<folder>/lake`, its secret at `<folder>/secret.key`; the raw `studies` stay
    where they were made (read them, never write there)."""

    lake: Lake
    root: Path  # the lake's folder
    settings: Settings
    secret_file: Path
    deids: list[str]
    rows: list[str]
    studies: list[SynthStudy]

    def copy(self, folder: Path) -> Self:
        """The same lake and secret under `folder` (merged into a lake already there)."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.root, folder / "lake", dirs_exist_ok=True)
        secret = folder / "secret.key"
        secret.unlink(missing_ok=True)
        shutil.copy2(self.secret_file, secret)
        settings = load_settings(secret_file=secret, cache_dir=folder / "cache")
        return replace(
            self,
            lake=Lake(LocalStore(folder / "lake")),
            root=folder / "lake",
            settings=settings,
            secret_file=secret,
        )


@dataclass(frozen=True)
class TrainedLake(IngestedLake):
    """An `IngestedLake` with `model` its champion."""

    model: str


def ingested_lake(tmp: Path, spec: SynthSpec = SMALL) -> IngestedLake:
    """`spec`'s studies with their labels, as `radflow ingest --labels` leaves them."""
    ensure_secret(tmp / "secret.key")
    settings = load_settings(secret_file=tmp / "secret.key", cache_dir=tmp / "cache")
    studies = synthesize(tmp / "train-inbox", tmp / "labels.csv", spec)
    lake = Lake(LocalStore(tmp / "lake"))
    store_labels(lake, (tmp / "labels.csv").read_text(), settings.pseudonym_secret())
    refs = fetch_delivery(LocalStore(tmp / "train-inbox"), "", settings.cache_dir).studies
    deids = [
        anonymize_study(lake, settings.cache_dir, r, settings.deid_config(), tmp / "reid")
        for r in refs
    ]
    rows = [
        extract_features(lake, build_volume(lake, d, settings.preprocess), d, settings.features)
        for d in deids
    ]
    update_catalog(lake, rows)
    return IngestedLake(lake, tmp / "lake", settings, tmp / "secret.key", deids, rows, studies)


def train(built: IngestedLake) -> TrainedLake:
    """`built`'s lake trained (logistic regression and random forest) and its model promoted."""
    lake, settings = built.lake, built.settings
    params = TrainSettings(candidates=("lr", "rf"))
    data = build_dataset(
        lake, built.rows, preprocessing(settings.preprocess), settings.features.model_dump()
    )
    model = register_model(lake, data, [fit_feature_candidates(lake, data, params)], params)
    promote_if_better(lake, model, params)
    return TrainedLake(**{f: getattr(built, f) for f in built.__dataclass_fields__}, model=model)


def trained_lake(tmp: Path, spec: SynthSpec = SMALL) -> TrainedLake:
    return train(ingested_lake(tmp, spec))


def stack_env(built: TrainedLake, tmp: Path) -> dict[str, str]:
    """This process's environment, without its RADFLOW_* and PREFECT_* settings, plus those a
    stack's workers need to work on `built` (caches and the map under `tmp`)."""
    import os

    from conftest import ROI_SOURCES_WITH_RULE

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    return env | {
        "RADFLOW_PREPROCESS__ROI_SOURCES": ROI_SOURCES_WITH_RULE,
        "RADFLOW_STORE_URL": built.root.as_uri(),
        "RADFLOW_SECRET_FILE": str(built.secret_file),
        "RADFLOW_CACHE_DIR": str(tmp / "cache"),
        "RADFLOW_DEID__REID_DIR": str(tmp / "reid"),
    }
