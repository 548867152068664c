"""The model registry: candidates -> one registered model, `models/<v>/<hash>/`, and the one
mutable pointer, the champion.

An entry holds `model.pkl` (a `Predictor`), `metrics.json`, and `card.json` (written last: its
presence commits the entry). `decision.json` records, once, whether it became the champion.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from radflow.config import TrainSettings
from radflow.errors import NotFoundError, RadflowError
from radflow.keys import address as content_address
from radflow.keys import canonical_json, sha256_bytes, short_id
from radflow.lake import Lake
from radflow.lake.records import (
    Calibration,
    CandidatePredictions,
    Champion,
    CodeVersion,
    ComparisonRow,
    Decision,
    Fingerprint,
    HeldOut,
    Metrics,
    ModelCard,
    Sanity,
    Split,
)
from radflow.models.evaluation import choose_threshold, evaluate_report
from radflow.models.metrics import evaluate
from radflow.models.predictor import Calibrated, Predictor, SoftVote, calibration_slope
from radflow.models.results import stored_probabilities
from radflow.models.table import training_table

NAME = "registry"


def model_address(dataset: str, candidates: list[str], settings: TrainSettings) -> str:
    chosen = settings.model_dump(
        include={"ensemble_size", "threshold_rule", "target_sensitivity", "calibration_slope"}
    )
    return content_address("models", [dataset, *sorted(candidates)], chosen)


class _Scored:
    """A candidate's probabilities with its validation AUC and Brier score, for ranking."""

    def __init__(self, found: CandidatePredictions, y_val: NDArray[np.int_]) -> None:
        self.found = found
        self.auc = evaluate(list(y_val), found.validation).auc
        self.brier = float(np.mean((np.asarray(found.validation) - y_val) ** 2))
        self.members: list[str] | None = None

    @property
    def rank(self) -> tuple[float, float]:
        """Best first: the highest validation AUC, then the lowest validation Brier score."""
        return (-self.auc, self.brier)


def register_model(lake: Lake, dataset: str, candidates: list[str], settings: TrainSettings) -> str:
    """Pick the best candidate (or the soft vote of the best few) on the validation patients,
    calibrate it and choose its threshold there, then evaluate it once on the test patients."""
    out = model_address(dataset, candidates, settings)
    if lake.has(out):
        return out
    data = lake.dataset(dataset)
    table = training_table(data, settings)
    split = table.split
    y_val, y_test = table.y[split.validation], table.y[split.test]
    predictors: dict[str, Predictor] = {}
    scored: dict[str, _Scored] = {}
    for folder in candidates:
        for name, found in lake.predictions(folder).candidates.items():
            predictors[name] = lake.candidate(folder, name)
            scored[name] = _Scored(found, y_val)
    if not scored:
        raise RadflowError("no candidate models to choose from", hint="check train.candidates")
    ranked = sorted(scored, key=lambda n: scored[n].rank)
    members = ranked[: settings.ensemble_size]
    if len(members) >= 2:
        name = "ensemble"
        predictors[name] = SoftVote(name, tuple(predictors[m] for m in members))
        vote = CandidatePredictions(
            validation=stored_probabilities(
                np.mean([scored[m].found.validation for m in members], axis=0)
            ),
            test=stored_probabilities(np.mean([scored[m].found.test for m in members], axis=0)),
            cv_auc=None,
        )
        scored[name] = _Scored(vote, y_val)
        scored[name].members = members
    best = min(scored, key=lambda n: scored[n].rank)
    chosen = scored[best].found
    model = Calibrated.fit(predictors[best], np.array(chosen.validation), list(y_val))
    val = model.calibrate(np.array(chosen.validation))
    threshold = choose_threshold(
        y_val, val, rule=settings.threshold_rule, target_sensitivity=settings.target_sensitivity
    )
    test = model.calibrate(np.array(chosen.test))
    evaluation = evaluate(
        list(y_test), list(test), threshold, n_train=len(split.fit) + len(split.validation)
    )
    report = evaluate_report(
        y_test, test, threshold, groups=[table.patients[i] for i in split.test], seed=settings.seed
    )
    slope = calibration_slope(list(y_test), test)
    lo, hi = settings.calibration_slope
    checks = {
        "finite probabilities": bool(np.all(np.isfinite(test) & (test >= 0) & (test <= 1))),
        "not constant": bool(np.ptp(test) > 0),
        "calibration slope within bounds": slope is None or lo <= slope <= hi,
    }
    comparison = [
        ComparisonRow(
            candidate=n,
            validation_auc=round(scored[n].auc, 4),
            test_auc=round(evaluate(list(y_test), scored[n].found.test).auc, 4),
            cv_auc=None if (cv := scored[n].found.cv_auc) is None else round(cv, 4),
            chosen=n == best,
        )
        for n in [*ranked, *(["ensemble"] if "ensemble" in scored else [])]
    ]
    importances = next((scored[n].found.importances or {} for n in ("rf", "gb") if n in scored), {})
    cnn = scored.get("cnn")
    card = ModelCard(
        model_id=f"{best}-{short_id(out, 8)}",
        address=out,
        kind=best,
        members=scored[best].members or [best],
        dataset=dataset,
        candidates=sorted(candidates),
        params=settings.model_dump(mode="json"),
        feature_names=table.names,
        preprocessing=data.preprocessing,
        extraction=data.extraction,
        fingerprint=Fingerprint(
            feature_rows=sha256_bytes(
                canonical_json([[r.features_key, r.features] for r in table.rows])
            ),
            labels=sha256_bytes(canonical_json([[r.study_id, r.label] for r in table.rows])),
        ),
        code_version=CodeVersion.of_this_code(),
        labels=data.summary(),
        split=Split(
            fit=[int(i) for i in split.fit],
            validation=[int(i) for i in split.validation],
            test=[int(i) for i in split.test],
            counts=split.counts(list(table.y)),
        ),
        calibration=Calibration(method=model.method, fitted_on="validation", test_slope=slope),
        sanity=Sanity(checks=checks, bounds=(lo, hi)),
        comparison=comparison,
        training=cnn.found.training if cnn else None,
        feature_importances=importances,
        evaluation=evaluation,
        report=report,
    )
    metrics = Metrics(model_id=card.model_id, held_out=HeldOut.of(report), candidates=comparison)
    lake.put_model(out, model, metrics, card)
    return out


def promote_if_better(lake: Lake, model: str, settings: TrainSettings) -> Decision:
    """Make `model` the champion only if it passes its sanity checks and beats the current
    champion's AUC, on the same held-out rows, by at least the margin. Decided once per model:
    a re-run repeats the decision, never re-decides."""
    if (stored := lake.decision(model)) is not None:
        return stored
    card = lake.card(model)
    auc = card.evaluation.auc
    decision = Decision(
        model=model,
        model_id=card.model_id,
        auc=auc,
        margin=settings.promotion_margin,
        previous=None,
        promoted=False,
        reason="",
    )
    try:
        current: str | None = lake.champion()
    except NotFoundError:
        current = None
    if current == model:
        return _decided(lake, decision, True, "already the champion")
    if failed := card.sanity.failed:
        return _decided(lake, decision, False, f"fails sanity checks: {', '.join(failed)}")
    if current is None:
        return _promote(lake, card, decision, "no champion yet")
    decision = decision.model_copy(update={"previous": current})
    previous = lake.card(current)
    if (previous.preprocessing, previous.extraction) != (card.preprocessing, card.extraction):
        why = "the champion reads features prepared with other settings; it cannot be compared"
        return _promote(lake, card, decision, why)
    rows = lake.dataset(card.dataset).rows
    test = [rows[i] for i in card.split.test]
    champion_model = lake.model(current)
    inputs = lake.model_inputs(test, previous.feature_names, champion_model.needs_volumes)
    proba = champion_model.predict_proba(inputs)[:, 1]
    previous_auc = evaluate([r.label for r in test], list(proba)).auc
    decision = decision.model_copy(update={"previous_auc": previous_auc})
    gain = auc - previous_auc
    verdict = f"test AUC {auc:.3f} vs the champion's {previous_auc:.3f} on the same rows"
    if gain > 0 and gain >= settings.promotion_margin:
        return _promote(lake, card, decision, f"{verdict}: better")
    shortfall = "not better" if gain <= 0 else f"better by less than {settings.promotion_margin}"
    return _decided(lake, decision, False, f"{verdict}: {shortfall}")


def _promote(lake: Lake, card: ModelCard, decision: Decision, reason: str) -> Decision:
    lake.set_champion(Champion(model=decision.model, model_id=card.model_id, auc=decision.auc))
    return _decided(lake, decision, True, reason)


def _decided(lake: Lake, decision: Decision, promoted: bool, reason: str) -> Decision:
    final = decision.model_copy(update={"promoted": promoted, "reason": reason})
    lake.put_decision(final)
    return final
