"""The catalog: each study's current feature row, `catalog/<study_id>.json`.

Content-addressed outputs accumulate (an old parameter's rows stay in the lake); the catalog
says which row is current, so training never mixes two versions of one study.
"""

from __future__ import annotations

import json

from radflow.stages.features import read_features
from radflow.store import ObjectStore


def update_catalog(store: ObjectStore, feature_keys: list[str]) -> int:
    """Point each study at its row; writes only what changed, returns how many changed."""
    changed = 0
    for key in feature_keys:
        study_id = str(read_features(store, key)["study_id"])
        entry = f"catalog/{study_id}.json"
        text = json.dumps({"features": key})
        if not store.exists(entry) or store.get_text(entry) != text:
            store.put_text(entry, text)
            changed += 1
    return changed


def current_features(store: ObjectStore) -> list[str]:
    return sorted(json.loads(store.get_text(o.key))["features"] for o in store.list("catalog/"))


def study_features(store: ObjectStore, study_id: str) -> str:
    """The study's current feature row; `study_id` is the pseudonym reports and runs show."""
    from radflow.errors import NotFoundError, RadflowError
    from radflow.store import validate_key

    entry = f"catalog/{study_id}.json"
    try:
        validate_key(entry)
    except ValueError as err:
        raise RadflowError(f"bad study ID: {err}", hint="give a pseudonymous study ID") from None
    if not store.exists(entry):
        raise NotFoundError(
            f"no study {study_id} in the catalog",
            hint="give the pseudonymous study ID a report shows; ingest the study first",
        )
    return str(json.loads(store.get_text(entry))["features"])
