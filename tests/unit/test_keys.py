"""The key scheme of the lake: content addresses are stable and sensitive to what matters."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radflow.keys import (
    address,
    canonical_json,
    digest,
    keyed_hash,
    secret_fingerprint,
    short_id,
    stage_versions,
)


def test_address_shape_and_stability() -> None:
    a = address("volumes", ["deid/v1/abc"], {"spacing": [1.5, 1.5, 1.5]})
    version = stage_versions()["volumes"]
    assert re.fullmatch(rf"volumes/{version}/[0-9a-f]{{64}}", a)
    assert a == address("volumes", ["deid/v1/abc"], {"spacing": [1.5, 1.5, 1.5]})


def test_address_changes_with_inputs_params_and_stage() -> None:
    base = address("features", ["volumes/v1/x"], {"bin_width": 25})
    assert base != address("features", ["volumes/v1/y"], {"bin_width": 25})
    assert base != address("features", ["volumes/v1/x"], {"bin_width": 10})
    assert address("scores", ["a", "b"]) != address("scores", ["b", "a"])  # input order matters


def test_param_order_does_not_matter() -> None:
    assert digest(["x"], {"a": 1, "b": 2}) == digest(["x"], {"b": 2, "a": 1})
    assert canonical_json({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        address("nope", [])


def test_every_stage_has_a_version() -> None:
    assert set(stage_versions()) >= {"deid", "volumes", "features", "models", "scores", "reports"}


def test_short_id_of_an_address_is_its_hash_prefix() -> None:
    a = address("deid", ["raw-1"])
    assert short_id(a) == a.rsplit("/", 1)[1][:12]
    assert re.fullmatch(r"[0-9a-f]{12}", short_id("MRN1234567/A1/S1/IM0001.dcm"))
    assert "MRN" not in short_id("MRN1234567")


@given(st.text(min_size=1), st.text(min_size=1))
def test_keyed_hash_depends_on_the_secret(value: str, other: str) -> None:
    assert keyed_hash(b"secret-one-0123456789", value) != keyed_hash(
        b"secret-two-0123456789", value
    )
    if value != other:
        assert keyed_hash(b"k" * 32, value) != keyed_hash(b"k" * 32, other)


def test_secret_fingerprint_does_not_reveal_the_secret() -> None:
    secret = b"a-very-secret-value-0123456789"
    fp = secret_fingerprint(secret)
    assert len(fp) == 16 and secret.decode() not in fp
    assert fp != secret_fingerprint(secret + b"x")
