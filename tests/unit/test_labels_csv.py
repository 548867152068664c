"""The labels CSV as spreadsheets save it: each variant is read to the exact pairs or refused
with the line that is wrong, and a refused file stores nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radflow.dicom.deid import study_pseudonym
from radflow.labels_csv import LabelsCsvError, StudyLabel, parse_labels_csv, read_labels_csv
from radflow.lake import Lake
from radflow.stages.labels import store_labels
from radflow.store import LocalStore

A = "1.2.826.0.1.3680043.8.498.11"
B = "1.2.826.0.1.3680043.8.498.12"
C = "1.2.826.0.1.3680043.8.498.13"
SECRET = b"labels-test-secret"
BOM = "\ufeff"


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        (f"study_uid,label\n{A},1\n{B},0\n", [(A, 1), (B, 0)]),
        (f"{BOM}study_uid,label\r\n{A},1\r\n{B},0\r\n", [(A, 1), (B, 0)]),
        (f"study_uid;label\n{A};0\n{B};1\n", [(A, 0), (B, 1)]),
        (f"study_uid\tlabel\n{A}\t1\n{B}\t0\n", [(A, 1), (B, 0)]),
        (f"study_uid,label\n{A},1.0\n{B},0.0\n{C},1.\n", [(A, 1), (B, 0), (C, 1)]),
        (f"study_uid,label\n{A},1\n{B},0\n\n\n  \n", [(A, 1), (B, 0)]),
        (f"study_uid,label\r\n{A},0\r\n{B},1\r\n\r\n", [(A, 0), (B, 1)]),
        (f" Study_UID , LABEL \n {A} , 1 \n", [(A, 1)]),
        (f'"study_uid","label"\n"{A}","1"\n', [(A, 1)]),
        (f"study_uid,label\n{A},1\n{B},0\n{A},1\n", [(A, 1), (B, 0)]),
    ],
    ids=[
        "plain",
        "excel-bom-crlf",
        "semicolons",
        "tabs",
        "floats",
        "trailing-blank-lines",
        "crlf",
        "header-case-and-spaces",
        "quoted",
        "duplicate-same-label",
    ],
)
def test_spreadsheet_variants_read_to_the_exact_pairs(
    text: str, pairs: list[tuple[str, int]]
) -> None:
    assert parse_labels_csv(text) == [StudyLabel(uid, label) for uid, label in pairs]


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        (
            f"StudyInstanceUID,outcome\n{A},1\n",
            "labels CSV line 1: the columns are 'StudyInstanceUID,outcome', expected"
            " study_uid,label",
            "study_uid,label",
        ),
        (
            f"{BOM}StudyInstanceUID;outcome\r\n{A};1\r\n",
            "labels CSV line 1: the columns are 'StudyInstanceUID,outcome', expected"
            " study_uid,label",
            "study_uid,label",
        ),
        (
            f"study_uid,label\n{A},1\n{B},malignant\n",
            "labels CSV line 3: the label is not 0 or 1",
            "1",
        ),
        (f"study_uid,label\n{A},\n{B},1\n", "labels CSV line 2: the label is empty", "leave"),
        (
            f"study_uid,label\n{A},1\n{B},0\n{C},2\n",
            "labels CSV line 4: the label is not 0 or 1",
            "0",
        ),
        (f"study_uid,label\n{A},1\n{B},0.5\n", "labels CSV line 3: the label is not 0 or 1", "0"),
        (f"study_uid,label\n{A},yes\n", "labels CSV line 2: the label is not 0 or 1", "0"),
        (
            f"study_uid,label\n{A},1\n{B},0\n{A},0\n",
            "labels CSV line 4: the study of line 2 again, with the other label",
            "one label per study",
        ),
        (
            f"study_uid,label\n\n{A},1\n\n{B},x\n",
            "labels CSV line 5: the label is not 0 or 1",
            "0",
        ),
        (
            f"study_uid,label\r\n{A},1\r\nDoe^John,1\r\n",
            "labels CSV line 3: study_uid is not a DICOM UID",
            "digits and dots",
        ),
        (
            f"study_uid,label\n{A}.{'1' * 64},1\n",
            "labels CSV line 2: study_uid is not a DICOM UID",
            "at most 64",
        ),
        (
            f"study_uid,label\n{A},1,extra\n",
            "labels CSV line 2: 3 columns where the header has 2",
            "",
        ),
        (f"study_uid,label\n{A}\n", "labels CSV line 2: 1 column where the header has 2", ""),
        ("", "labels CSV line 1: no header", "study_uid,label"),
        (f"{BOM}\r\n\r\n", "labels CSV line 1: no header", "study_uid,label"),
        ("study_uid,label\n\n", "labels CSV: no rows under the header", "one row per study"),
        (f'study_uid,label\n"{A},1\n', "labels CSV line 2: not readable as CSV", ""),
    ],
    ids=[
        "header",
        "header-bom-semicolons",
        "word",
        "blank",
        "two",
        "half",
        "yes",
        "duplicate-other-label",
        "line-after-blank-lines",
        "uid-name",
        "uid-too-long",
        "extra-column",
        "missing-column",
        "empty",
        "bom-only",
        "header-only",
        "unclosed-quote",
    ],
)
def test_mistakes_name_the_line_and_never_the_uid(text: str, message: str, hint: str) -> None:
    with pytest.raises(LabelsCsvError) as caught:
        parse_labels_csv(text)
    assert str(caught.value).startswith(message)
    assert hint in caught.value.hint
    for uid in (A, B, C, "Doe^John"):
        assert uid not in str(caught.value) and uid not in caught.value.hint


def test_a_file_that_is_not_utf8_or_not_there(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"study_uid,label\n{A},1\n".encode() + b"\xe9\n")
    with pytest.raises(LabelsCsvError, match=r"^labels CSV is not UTF-8 text$"):
        read_labels_csv(latin)
    with pytest.raises(LabelsCsvError, match=r"^no labels file at the given path$"):
        read_labels_csv(tmp_path / "nope.csv")


def test_a_good_file_stores_each_label_under_its_pseudonym(tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"))
    assert store_labels(lake, f"{BOM}study_uid;label\r\n{A};1.0\r\n{B};0\r\n", SECRET) == 2
    assert lake.labelled_studies() == {study_pseudonym(SECRET, A), study_pseudonym(SECRET, B)}
    assert lake.label(study_pseudonym(SECRET, A)) == 1
    assert lake.label(study_pseudonym(SECRET, B)) == 0


def test_a_bad_row_after_good_ones_stores_nothing(tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"))
    with pytest.raises(LabelsCsvError, match=r"^labels CSV line 4: the label is not 0 or 1$"):
        store_labels(lake, f"study_uid,label\n{A},1\n{B},0\n{C},malignant\n", SECRET)
    assert lake.labelled_studies() == set()
    assert not (tmp_path / "lake" / "labels").exists()


def test_ingest_refuses_a_bad_labels_file_in_one_line_before_prefect(tmp_path: Path) -> None:
    """A subprocess, as the user runs it: exit 2, the error and its hint, no traceback, no
    Prefect home made, nothing in the lake, in seconds."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_bytes(f"{BOM}StudyInstanceUID,outcome\r\n{A},malignant\r\n".encode())
    env = {
        **os.environ,
        "RADFLOW_SECRET": "a-secret-for-this-test-only-0123456789",
        "RADFLOW_STORE_URL": (tmp_path / "lake").as_uri(),
        "RADFLOW_CACHE_DIR": str(tmp_path / "cache"),
        "RADFLOW_DEID__REID_DIR": str(tmp_path / "reid"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "radflow.cli", "ingest", str(inbox), "--labels", str(labels)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: labels CSV line 1: the columns are 'StudyInstanceUID,outcome', expected"
        " study_uid,label",
        "hint: the first line must name the columns: study_uid,label",
    ]
    assert "Traceback" not in done.stderr
    assert elapsed < 10
    assert not (tmp_path / "prefect").exists()
    assert not (tmp_path / "lake" / "labels").exists()
