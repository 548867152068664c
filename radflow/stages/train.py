"""Train: labelled feature rows -> candidate models -> one registered model.

Layout: `datasets/<v>/<hash>.json` (the training table and what did not join),
`candidates/<v>/<hash>/` (fitted candidates and their validation and test probabilities,
`predictions.json` written last), then a registry entry (`radflow.stages.registry`).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from radflow import __version__
from radflow.config import TrainSettings
from radflow.errors import RadflowError
from radflow.keys import address, canonical_json, sha256_bytes, short_id
from radflow.models.candidates import (
    FEATURE_CANDIDATES,
    feature_pipeline,
    grouped_cv_auc,
    selected_importances,
)
from radflow.models.evaluation import choose_threshold, evaluate_report
from radflow.models.metrics import evaluate
from radflow.models.predictor import (
    Calibrated,
    OnFeatures,
    OnVolumes,
    Predictor,
    SoftVote,
    calibration_slope,
)
from radflow.models.train import Split, three_way_split
from radflow.stages.anonymize import read_label
from radflow.stages.features import read_features, read_qc
from radflow.stages.registry import CARD, METRICS, MODEL, inputs_for
from radflow.store import ObjectStore

PREDICTIONS = "predictions.json"


# --- the dataset -------------------------------------------------------------------------


def build_dataset(
    store: ObjectStore,
    feature_keys: list[str],
    preprocessing: dict[str, Any],
    extraction: dict[str, Any],
) -> str:
    """The labelled rows prepared with the given settings, and a report of what did not join:
    studies without a label (kept for scoring), labels without a study, and rows prepared with
    other settings (never mixed into one model)."""
    # Compared with what was read back from JSON: tuples become lists there.
    preprocessing, extraction = json.loads(json.dumps([preprocessing, extraction]))
    rows, unlabelled, stale = [], [], []
    studies = set()
    for key in sorted(set(feature_keys)):
        row = read_features(store, key)
        study_id = str(row["study_id"])
        studies.add(study_id)
        qc = read_qc(store, str(row["volume"]))
        if (qc.get("preprocessing"), row.get("extraction")) != (preprocessing, extraction):
            stale.append(study_id)
            continue
        label = read_label(store, study_id)
        if label is None:
            unlabelled.append(study_id)
        else:
            rows.append({**row, "label": label, "features_key": key})
    labelled = {o.key.removeprefix("labels/").removesuffix(".json") for o in store.list("labels/")}
    table = {
        "rows": rows,
        "unlabelled_studies": sorted(unlabelled),
        "labels_without_study": sorted(labelled - studies),
        "stale_studies": sorted(stale),
        "preprocessing": preprocessing,
        "extraction": extraction,
    }
    out = address("datasets", [sha256_bytes(canonical_json(table))])
    if not store.exists(out):
        store.put_text(out, json.dumps(table, indent=1, sort_keys=True))
    return out


def read_dataset(store: ObjectStore, dataset: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(store.get_text(dataset))
    return data


def labels_summary(data: dict[str, Any]) -> dict[str, int]:
    return {
        "labelled_studies": len(data["rows"]),
        "unlabelled_studies": len(data["unlabelled_studies"]),
        "labels_without_study": len(data["labels_without_study"]),
        "stale_studies": len(data["stale_studies"]),
    }


@dataclass(frozen=True)
class _Table:
    rows: list[dict[str, Any]]
    names: list[str]
    y: NDArray[np.int_]
    patients: list[str]
    split: Split


def _table(store: ObjectStore, dataset: str, settings: TrainSettings) -> _Table:
    rows: list[dict[str, Any]] = read_dataset(store, dataset)["rows"]
    if not rows:
        raise RadflowError("no labelled studies to train on", hint="ingest with --labels CSV")
    y = np.array([int(r["label"]) for r in rows])
    patients = [str(r["patient_id"]) for r in rows]
    try:
        split = three_way_split(
            patients, list(y), settings.test_fraction, settings.validation_fraction, settings.seed
        )
    except ValueError as err:
        raise RadflowError(
            f"cannot split {len(rows)} labelled studies by patient: {err}",
            hint="label more studies of each class",
        ) from None
    return _Table(rows, sorted(rows[0]["features"]), y, patients, split)


# --- candidates --------------------------------------------------------------------------


def _split_params(settings: TrainSettings) -> dict[str, Any]:
    return settings.model_dump(include={"seed", "test_fraction", "validation_fraction"})


def feature_candidates_address(dataset: str, settings: TrainSettings) -> str:
    names = [c for c in settings.candidates if c in FEATURE_CANDIDATES]
    return address(
        "candidates",
        [dataset],
        {
            "kind": "features",
            "names": names,
            **_split_params(settings),
            **settings.model_dump(include={"n_estimators", "select_k"}),
        },
    )


def cnn_candidate_address(dataset: str, settings: TrainSettings) -> str:
    return address(
        "candidates",
        [dataset],
        {"kind": "cnn", **_split_params(settings), "cnn": settings.cnn.model_dump()},
    )


def _put_pickle(store: ObjectStore, key: str, value: object) -> None:
    buf = io.BytesIO()
    pickle.dump(value, buf, protocol=5)
    store.put_bytes(key, buf.getvalue())


def _floats(values: NDArray[np.float64]) -> list[float]:
    return [round(float(v), 8) for v in values]


def fit_feature_candidates(store: ObjectStore, dataset: str, settings: TrainSettings) -> str:
    """Each feature candidate fitted on the fit patients, with its probabilities on the
    validation and test patients, and its patient-grouped CV AUC on fit + validation."""
    out = feature_candidates_address(dataset, settings)
    if store.exists(f"{out}/{PREDICTIONS}"):
        return out
    t = _table(store, dataset, settings)
    x = inputs_for(store, t.rows, t.names, volumes=False).features
    s = t.split
    train = np.concatenate([s.fit, s.validation])
    found: dict[str, Any] = {}
    for name in (c for c in settings.candidates if c in FEATURE_CANDIDATES):
        cv_auc = grouped_cv_auc(
            feature_pipeline(name, settings, len(t.names)),
            x[train],
            t.y[train],
            [t.patients[i] for i in train],
            settings.seed,
        )
        pipeline = feature_pipeline(name, settings, len(t.names)).fit(x[s.fit], t.y[s.fit])
        _put_pickle(store, f"{out}/{name}.pkl", OnFeatures(name, pipeline))
        found[name] = {
            "validation": _floats(pipeline.predict_proba(x[s.validation])[:, 1]),
            "test": _floats(pipeline.predict_proba(x[s.test])[:, 1]),
            "cv_auc": cv_auc,
        }
        if name in ("rf", "gb"):
            found[name]["importances"] = selected_importances(pipeline, t.names)
    store.put_text(f"{out}/{PREDICTIONS}", json.dumps(found, indent=1, sort_keys=True))
    return out


def fit_cnn_candidate(
    store: ObjectStore,
    dataset: str,
    settings: TrainSettings,
    checkpoints: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """The 3D CNN fitted on the fit patients' volumes, stopped early on the validation
    patients'. With `checkpoints` (a local folder) a killed training resumes where it was."""
    from radflow.models.cnn import CNNClassifier

    out = cnn_candidate_address(dataset, settings)
    if store.exists(f"{out}/{PREDICTIONS}"):
        return out
    t = _table(store, dataset, settings)
    volumes = inputs_for(store, t.rows, t.names, volumes=True).volumes
    assert volumes is not None
    s, c = t.split, settings.cnn
    cnn = CNNClassifier(
        width=c.width,
        epochs=c.epochs,
        batch_size=c.batch_size,
        learning_rate=c.learning_rate,
        patience=c.patience,
        num_workers=c.num_workers,
        device=c.device,
        seed=settings.seed,
        checkpoint_dir=str(checkpoints / short_id(out)) if checkpoints else None,
    )
    cnn.fit(volumes[s.fit], t.y[s.fit], volumes[s.validation], t.y[s.validation])
    cnn.set_params(checkpoint_dir=None)  # a local path: not part of the model
    _put_pickle(store, f"{out}/cnn.pkl", OnVolumes("cnn", cnn))
    found = {
        "cnn": {
            "validation": _floats(cnn.predict_proba(volumes[s.validation])[:, 1]),
            "test": _floats(cnn.predict_proba(volumes[s.test])[:, 1]),
            "cv_auc": None,
            "training": {
                "device": cnn.device_,
                "best_epoch": cnn.best_epoch_,
                "epochs_run": len(cnn.history_),
                "resumed_from_epoch": cnn.resumed_from_epoch_,
                "history": cnn.history_,
            },
        }
    }
    store.put_text(f"{out}/{PREDICTIONS}", json.dumps(found, indent=1, sort_keys=True))
    return out


# --- the registry entry ------------------------------------------------------------------


def model_address(dataset: str, candidates: list[str], settings: TrainSettings) -> str:
    chosen = settings.model_dump(
        include={"ensemble_size", "threshold_rule", "target_sensitivity", "calibration_slope"}
    )
    return address("models", [dataset, *sorted(candidates)], chosen)


def _auc(y: NDArray[np.int_], p: list[float]) -> float:
    return evaluate(list(y), p).auc


def _brier(y: NDArray[np.int_], p: list[float]) -> float:
    return float(np.mean((np.asarray(p) - y) ** 2))


def _rank(entry: dict[str, Any]) -> tuple[float, float]:
    """Best first: the highest validation AUC, then the lowest validation Brier score."""
    return (-entry["validation_auc"], entry["validation_brier"])


def code_version() -> dict[str, str]:
    """radflow's release and a digest of its source files: what made a model, beyond its data."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return {"radflow": __version__, "source_sha256": h.hexdigest()}


def register_model(
    store: ObjectStore, dataset: str, candidates: list[str], settings: TrainSettings
) -> str:
    """Pick the best candidate (or the soft vote of the best few) on the validation patients,
    calibrate it and choose its threshold there, then evaluate it once on the test patients."""
    out = model_address(dataset, candidates, settings)
    if store.exists(f"{out}/{CARD}"):
        return out
    data = read_dataset(store, dataset)
    t = _table(store, dataset, settings)
    s = t.split
    y_val, y_test = t.y[s.validation], t.y[s.test]
    predictors: dict[str, Predictor] = {}
    found: dict[str, dict[str, Any]] = {}
    for key in candidates:
        for name, entry in json.loads(store.get_text(f"{key}/{PREDICTIONS}")).items():
            predictors[name] = pickle.loads(store.get_bytes(f"{key}/{name}.pkl"))
            found[name] = entry
    if not found:
        raise RadflowError("no candidate models to choose from", hint="check train.candidates")
    for entry in found.values():
        entry["validation_auc"] = _auc(y_val, entry["validation"])
        entry["validation_brier"] = _brier(y_val, entry["validation"])
    ranked = sorted(found, key=lambda n: _rank(found[n]))
    members = ranked[: settings.ensemble_size]
    if len(members) >= 2:
        name = "ensemble"
        predictors[name] = SoftVote(name, tuple(predictors[m] for m in members))
        vote = {
            part: _floats(np.mean([found[m][part] for m in members], axis=0))
            for part in ("validation", "test")
        }
        found[name] = {**vote, "cv_auc": None, "members": members}
        found[name]["validation_auc"] = _auc(y_val, vote["validation"])
        found[name]["validation_brier"] = _brier(y_val, vote["validation"])
    best = min(found, key=lambda n: _rank(found[n]))
    model = Calibrated.fit(predictors[best], np.array(found[best]["validation"]), list(y_val))
    val = model.calibrate(np.array(found[best]["validation"]))
    threshold = choose_threshold(
        y_val, val, rule=settings.threshold_rule, target_sensitivity=settings.target_sensitivity
    )
    test = model.calibrate(np.array(found[best]["test"]))
    evaluation = evaluate(
        list(y_test), list(test), threshold, n_train=len(s.fit) + len(s.validation)
    )
    report = evaluate_report(
        y_test, test, threshold, groups=[t.patients[i] for i in s.test], seed=settings.seed
    )
    slope = calibration_slope(list(y_test), test)
    lo, hi = settings.calibration_slope
    checks = {
        "finite probabilities": bool(np.all(np.isfinite(test) & (test >= 0) & (test <= 1))),
        "not constant": bool(np.ptp(test) > 0),
        "calibration slope within bounds": slope is None or lo <= slope <= hi,
    }
    table = [
        {
            "candidate": n,
            "validation_auc": round(found[n]["validation_auc"], 4),
            "test_auc": round(_auc(y_test, found[n]["test"]), 4),
            "cv_auc": None if found[n]["cv_auc"] is None else round(found[n]["cv_auc"], 4),
            "chosen": n == best,
        }
        for n in [*ranked, *(["ensemble"] if "ensemble" in found else [])]
    ]
    importances: dict[str, float] = next(
        (found[n]["importances"] for n in ("rf", "gb") if n in found), {}
    )
    card = {
        "model_id": f"{best}-{short_id(out, 8)}",
        "address": out,
        "kind": best,
        "members": found[best].get("members", [best]),
        "dataset": dataset,
        "candidates": sorted(candidates),
        "params": settings.model_dump(mode="json"),
        "feature_names": t.names,
        "preprocessing": data["preprocessing"],
        "extraction": data["extraction"],
        "fingerprint": {
            "feature_rows": sha256_bytes(
                canonical_json([[r["features_key"], r["features"]] for r in t.rows])
            ),
            "labels": sha256_bytes(canonical_json([[r["study_id"], r["label"]] for r in t.rows])),
        },
        "code_version": code_version(),
        "labels": labels_summary(data),
        "split": {
            "fit": [int(i) for i in s.fit],
            "validation": [int(i) for i in s.validation],
            "test": [int(i) for i in s.test],
            "counts": s.counts(list(t.y)),
        },
        "calibration": {"method": "platt", "fitted_on": "validation", "test_slope": slope},
        "sanity": {"checks": checks, "bounds": [lo, hi]},
        "comparison": table,
        "training": found.get("cnn", {}).get("training"),
        "feature_importances": importances,
        "evaluation": evaluation.to_dict(),
        "report": report.to_dict(),
    }
    metrics = {"model_id": card["model_id"], "held_out": _headline(report), "candidates": table}
    _put_pickle(store, f"{out}/{MODEL}", model)
    store.put_text(f"{out}/{METRICS}", json.dumps(metrics, indent=1, sort_keys=True))
    store.put_text(f"{out}/{CARD}", json.dumps(card, indent=1, sort_keys=True))
    return out


def _headline(report: Any) -> dict[str, Any]:
    """The held-out metrics a person compares, without the curves."""
    r = report.to_dict()
    return {k: r[k] for k in r if k not in ("roc", "pr", "calibration")}
