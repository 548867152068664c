"""The de-identification profile as data: PS3.15 Table E.1-1 and PS3.16 CID 7050.

The table ships as `data/annex_e.csv` (one row per attribute: the Basic Profile action and
the action of each option column); this module only reads and interprets it.
"""

from __future__ import annotations

import csv
import io
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

_DATA = "dicom/data"


class Option(StrEnum):
    """The profile options radflow implements (the names of the table's option columns)."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"
    CLEAN_PIXEL_DATA = "clean_pixel_data"


@dataclass(frozen=True)
class Rule:
    tag: str
    name: str
    basic: str
    options: dict[str, str]


@dataclass(frozen=True)
class Code:
    value: str
    meaning: str


def _text(name: str) -> str:
    return resources.files("radflow").joinpath(f"{_DATA}/{name}").read_text(encoding="utf-8")


def _resolve(code: str) -> str:
    """One action from the table's combined codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*).

    The standard leaves the choice to the attribute's type in the IOD; without the IOD
    tables radflow takes the last code, which is valid for every type (an attribute that is
    present and empty or dummy never breaks a type 1 or 2 requirement) and still discloses
    nothing."""
    return code.split("/")[-1].rstrip("*")


class Profile:
    """Table E.1-1 indexed by tag: exact tags in a dict, repeating groups (50xx, 60xx) by mask."""

    def __init__(self, rules: list[Rule], edition: str) -> None:
        self.edition = edition
        self.rules = rules
        self._exact: dict[int, Rule] = {}
        self._masked: list[tuple[int, int, Rule]] = []
        for rule in rules:
            if "x" in rule.tag:
                mask = int("".join("0" if c == "x" else "F" for c in rule.tag), 16)
                value = int(rule.tag.replace("x", "0"), 16)
                self._masked.append((mask, value, rule))
            else:
                self._exact[int(rule.tag, 16)] = rule

    @classmethod
    @cache
    def standard(cls) -> Profile:
        meta = tomllib.loads(_text("annex_e.toml"))
        rows = csv.DictReader(io.StringIO(_text("annex_e.csv")))
        rules = [
            Rule(
                tag=row["tag"],
                name=row["name"],
                basic=row["basic"],
                options={o.value: row[o.value] for o in Option if row.get(o.value)},
            )
            for row in rows
        ]
        return cls(rules, str(meta["edition"]))

    def rule(self, tag: int) -> Rule | None:
        found = self._exact.get(tag)
        if found is not None:
            return found
        for mask, value, rule in self._masked:
            if tag & mask == value:
                return rule
        return None

    def action(self, tag: int, options: frozenset[str]) -> str | None:
        """The single action for `tag` under `options`, or None when the table does not list it.

        An enabled option's code replaces the basic one; when several enabled options name the
        same attribute, keeping (K) wins over cleaning (C), which wins over the rest: each
        option is a user's explicit request to retain more."""
        rule = self.rule(tag)
        if rule is None:
            return None
        chosen = [rule.options[o] for o in options if o in rule.options]
        for preferred in ("K", "C"):
            if preferred in chosen:
                return preferred
        return _resolve(chosen[0] if chosen else rule.basic)


@cache
def method_codes() -> dict[str, Code]:
    """PS3.16 CID 7050 (De-identification Method): option name -> code, scheme DCM."""
    rows = csv.DictReader(io.StringIO(_text("cid7050.csv")))
    return {r["option"]: Code(r["code_value"], r["code_meaning"]) for r in rows}
