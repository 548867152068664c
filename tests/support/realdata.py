"""Real images and published values nobody on the project wrote.

- pyradiomics' five test cases and its feature baseline, fetched from its source package by
  `make test-data` (a missing folder fails the test with that command, never skips it);
- pydicom's own test files and the pydicom-data wheel (a dev dependency), found through
  `pydicom.data.get_testdata_file`.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parents[1] / ".data"
PYRADIOMICS = ROOT / "pyradiomics"

#: pyradiomics' cases: two chest CTs with a nodule, two brain MRs, one breast MR.
CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test-data` first", pytrace=False)
    return path


def pyradiomics_case(case: str) -> tuple[Path, Path]:
    """The case's image and label map (NRRD)."""
    return (
        _require(PYRADIOMICS / f"{case}_image.nrrd"),
        _require(PYRADIOMICS / f"{case}_label.nrrd"),
    )


@cache
def pyradiomics_baseline(feature_class: str) -> dict[str, dict[str, str]]:
    """pyradiomics' published values of one feature class, as case -> feature -> text.

    Only the default-settings columns (not `<case>_resampling`); names keep pyradiomics'
    `original_<class>_<Feature>` form.
    """
    path = _require(PYRADIOMICS / "baseline" / f"baseline_{feature_class}.csv")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    out: dict[str, dict[str, str]] = {case: {} for case in CASES}
    for row in rows[1:]:
        for column, value in zip(header[1:], row[1:], strict=True):
            if column in out:
                out[column][row[0]] = value
    return out


def pydicom_file(name: str) -> Path:
    """One of pydicom's test files, or one of pydicom-data's (a dev dependency)."""
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.fail(f"pydicom test file {name} not found: is pydicom-data installed?")
    return Path(str(found))
