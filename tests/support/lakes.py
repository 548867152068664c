"""A lake with a champion model, built by the real stages without Prefect (about 15 s)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from radflow.config import Settings, TrainSettings, load_settings
from radflow.demo import ensure_secret
from radflow.imaging.pipelines import preprocessing
from radflow.lake import Lake
from radflow.stages.anonymize import anonymize_study
from radflow.stages.candidates import fit_feature_candidates
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
class TrainedLake:
    lake: Lake
    root: Path  # the lake's folder
    settings: Settings
    secret_file: Path
    deids: list[str]
    rows: list[str]
    model: str
    studies: list[SynthStudy]


def trained_lake(tmp: Path, spec: SynthSpec = SMALL) -> TrainedLake:
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
    train = TrainSettings(candidates=("lr", "rf"))
    data = build_dataset(
        lake, rows, preprocessing(settings.preprocess), settings.features.model_dump()
    )
    model = register_model(lake, data, [fit_feature_candidates(lake, data, train)], train)
    promote_if_better(lake, model, train)
    return TrainedLake(
        lake, tmp / "lake", settings, tmp / "secret.key", deids, rows, model, studies
    )


def stack_env(built: TrainedLake, tmp: Path) -> dict[str, str]:
    """This process's environment, without its RADFLOW_* and PREFECT_* settings, plus those a
    stack's workers need to work on `built` (caches and the map under `tmp`)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADFLOW_", "PREFECT_"))}
    return env | {
        "RADFLOW_STORE_URL": built.lake.url,
        "RADFLOW_SECRET_FILE": str(built.secret_file),
        "RADFLOW_CACHE_DIR": str(tmp / "cache"),
        "RADFLOW_DEID__REID_DIR": str(tmp / "reid"),
    }
