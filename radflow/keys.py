"""Content hashing and the key scheme of the lake.

Every stage output lives at `<stage>/<stage_version>/<digest(inputs, params)>`: the same
inputs and parameters always give the same address, and a changed parameter or stage
version gives a new one. Prefect's cache keys are these addresses, so a re-run is Cached.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tomllib
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


@cache
def stage_versions() -> Mapping[str, str]:
    """The stage versions, read from the package's data table."""
    text = resources.files("radflow").joinpath("data/stages.toml").read_text()
    return dict(tomllib.loads(text)["stages"])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hash a file in chunks, so memory stays bounded for large volumes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def digest(inputs: Sequence[str], params: Mapping[str, Any] | None = None) -> str:
    """Hash of input hashes/keys (order matters) and parameters (order does not)."""
    return sha256_bytes(canonical_json({"inputs": list(inputs), "params": params or {}}))


def address(stage: str, inputs: Sequence[str], params: Mapping[str, Any] | None = None) -> str:
    """The content address of a stage output."""
    versions = stage_versions()
    if stage not in versions:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(sorted(versions))}")
    return f"{stage}/{versions[stage]}/{digest(inputs, params)}"


def short_id(key: str, length: int = 12) -> str:
    """A short, stable, PHI-free name for a key: for run names and report titles."""
    tail = key.rstrip("/").rsplit("/", 1)[-1]
    if len(tail) >= length and all(c in "0123456789abcdef" for c in tail[:length]):
        return tail[:length]
    return sha256_bytes(key.encode())[:length]


def keyed_hash(secret: bytes, value: str) -> str:
    """HMAC-SHA256 of a value under the project secret: pseudonyms nobody can recompute."""
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()


def secret_fingerprint(secret: bytes) -> str:
    """Identifies a secret in content addresses without revealing it."""
    return keyed_hash(secret, "radflow-secret-fingerprint")[:16]
