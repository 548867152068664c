"""The catalog: each study's current feature row, `catalog/<study_id>.json`.

Content-addressed outputs accumulate (an old parameter's rows stay in the lake); the catalog
says which row is current, so training never mixes two versions of one study.
"""

from __future__ import annotations

from radflow.lake import Lake

NAME = "catalog"


def update_catalog(lake: Lake, feature_keys: list[str]) -> int:
    """Point each study at its row; writes only what changed, returns how many changed."""
    return sum(lake.point_catalog(lake.feature_row(key).study_id, key) for key in feature_keys)
