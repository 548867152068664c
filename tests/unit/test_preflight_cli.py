"""Every flow command's common mistakes, run as the user runs them (`radflow <cmd>` in a
subprocess, its own working directory and environment): exit code 2, exactly one `error:`
line and one `hint:` line on stderr, no traceback, in under 3 s, and Prefect never imported
(`python -X importtime` lists every module the process imported)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROI_SOURCES_WITH_RULE, S3_REGION
from support.lakes import IngestedLake

from radflow.synth import SynthSpec, synthesize

SECRET = "a-secret-for-this-test-only-0123456789"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Refusal:
    error: str
    hint: str


def refused(cwd: Path, env: dict[str, str], *args: str) -> Refusal:
    """Run `radflow ARGS` in `cwd` with only `env` (and PATH); assert it refused as a user's
    mistake should, before Prefect."""
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(cwd / ".prefect"),
        "AWS_CONFIG_FILE": str(cwd / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups for credentials
        "NO_PROXY": "127.0.0.1,localhost",
    }
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "radflow.cli", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    imported = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert len(lines) == 2 and lines[0].startswith("error: "), lines
    assert lines[1].startswith("hint: ") and len(lines[1]) > len("hint: "), lines
    assert done.stdout == ""
    modules = {line.rsplit("|", 1)[-1].strip() for line in imported}
    # At once: none of the imports that take seconds (Prefect, torch and what needs it). What
    # this tests, not a wall-clock bound, which a loaded machine breaks.
    heavy = ("prefect", "torch", "monai", "sklearn")
    assert not {m for m in modules if m.split(".")[0] in heavy}
    assert not (cwd / ".prefect").exists()
    return Refusal(lines[0].removeprefix("error: "), lines[1].removeprefix("hint: "))


def _secret_file(folder: Path, mode: int = 0o600) -> Path:
    path = folder / "secret.key"
    path.write_text(SECRET)
    path.chmod(mode)
    return path


@pytest.fixture
def delivery(tmp_path: Path) -> Path:
    """A working directory with a delivery of two small synthetic studies in `inbox/`."""
    synthesize(tmp_path / "inbox", tmp_path / "labels.csv", SynthSpec(2, 16, 16, 8, seed=3))
    return tmp_path


# ------------------------------------------------------------------------ secret, settings


def test_ingest_without_a_secret(delivery: Path) -> None:
    got = refused(delivery, {}, "ingest", "inbox")
    assert got.error == "setting RADFLOW_SECRET: no pseudonymisation secret is set"
    assert "RADFLOW_SECRET_FILE" in got.hint


def test_ingest_with_a_secret_file_others_can_read(delivery: Path) -> None:
    secret = _secret_file(delivery, 0o644)
    got = refused(delivery, {"RADFLOW_SECRET_FILE": str(secret)}, "ingest", "inbox")
    assert got.error == "setting RADFLOW_SECRET_FILE: the file is readable by others"
    assert got.hint == f"chmod 600 {secret}"


def test_score_with_a_secret_file_that_is_not_there(delivery: Path) -> None:
    env = {"RADFLOW_SECRET_FILE": str(delivery / "nope.key")}
    got = refused(delivery, env, "score", "inbox")
    assert got.error == "setting RADFLOW_SECRET_FILE: the file does not exist"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('[64,64,"x"]', "item 3 is wrong: Input should be a valid integer"),
        ("64,64,48", "is not valid JSON"),
        ("[64,64]", "item 3 is missing"),
    ],
)
def test_a_bad_list_setting_names_the_real_variable(
    delivery: Path, value: str, problem: str
) -> None:
    env = {"RADFLOW_SECRET": SECRET, "RADFLOW_PREPROCESS__SHAPE": value}
    got = refused(delivery, env, "ingest", "inbox")
    assert got.error.startswith(f"setting RADFLOW_PREPROCESS__SHAPE: {problem}")
    assert got.error.endswith("it needs three integers as a JSON list, e.g. [40,40,40]")
    assert "SHAPE__" not in got.error + got.hint
    assert got.hint == "e.g. RADFLOW_PREPROCESS__SHAPE='[40,40,40]' (the default)"


@pytest.mark.parametrize("command", [["train"], ["score", "inbox"], ["report", "x"], ["demo"]])
def test_every_flow_command_checks_the_settings(delivery: Path, command: list[str]) -> None:
    env = {"RADFLOW_SECRET": SECRET, "RADFLOW_TRAIN__CNN__DEVICE": "gpu"}
    got = refused(delivery, env, *command)
    assert (
        got.error == "setting RADFLOW_TRAIN__CNN__DEVICE: Input should be 'auto', 'cpu' or 'cuda'"
    )
    assert got.hint == "e.g. RADFLOW_TRAIN__CNN__DEVICE=auto (the default)"


# ---------------------------------------------------------------------------- deliveries


def test_ingest_of_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    got = refused(tmp_path, {"RADFLOW_SECRET": SECRET}, "ingest", "inbox")
    assert got.error == "the delivery holds no files"


def test_ingest_with_a_labels_file_of_the_wrong_header(delivery: Path) -> None:
    (delivery / "bad.csv").write_text("StudyInstanceUID,outcome\n1.2.3,1\n")
    got = refused(delivery, {"RADFLOW_SECRET": SECRET}, "ingest", "inbox", "--labels", "bad.csv")
    assert got.error.startswith("labels CSV line 1: the columns are")


# -------------------------------------------------------------------------------- the lake


def _lake_env(lake: IngestedLake) -> dict[str, str]:
    return {
        "RADFLOW_STORE_URL": lake.root.as_uri(),
        "RADFLOW_SECRET_FILE": str(lake.secret_file),
        "RADFLOW_PREPROCESS__ROI_SOURCES": ROI_SOURCES_WITH_RULE,
    }


def test_train_on_an_empty_lake(tmp_path: Path) -> None:
    got = refused(tmp_path, {"RADFLOW_SECRET": SECRET}, "train")
    assert got.error == "the lake holds no prepared studies"
    assert "radflow ingest" in got.hint


def test_train_with_too_few_labelled_patients(ingested: IngestedLake, tmp_path: Path) -> None:
    lake = ingested.copy(tmp_path / "work")
    patient_of = {r.study_id: r.patient_id for r in map(lake.lake.feature_row, ingested.rows)}
    kept: dict[int, set[str]] = {0: set(), 1: set()}
    for path in sorted((lake.root / "labels").glob("*.json")):
        # Two patients of each class stay labelled (all their studies): one short of a split.
        label = lake.lake.label(path.stem)
        assert label is not None
        patient = patient_of[path.stem]
        if patient in kept[label] or len(kept[label]) < 2:
            kept[label].add(patient)
        else:
            path.unlink()
    assert [len(kept[0]), len(kept[1])] == [2, 2]
    got = refused(tmp_path, _lake_env(lake), "train")
    assert got.error == (
        "too few labelled patients to split into fit, validation and test:"
        " 2 with label 0, 2 with label 1"
    )
    assert got.hint.startswith("label at least 3 patients of each class")


def test_train_with_no_labels(ingested: IngestedLake, tmp_path: Path) -> None:
    lake = ingested.copy(tmp_path / "work")
    shutil.rmtree(lake.root / "labels")
    got = refused(tmp_path, _lake_env(lake), "train")
    assert got.error == (
        f"no labelled studies to train on: of {len(ingested.rows)} studies in the lake,"
        " none has a label"
    )


def test_train_on_rows_prepared_with_other_settings(ingested: IngestedLake, tmp_path: Path) -> None:
    lake = ingested.copy(tmp_path / "work")
    env = {**_lake_env(lake), "RADFLOW_PREPROCESS__SHAPE": "[32,32,32]"}
    got = refused(tmp_path, env, "train")
    assert got.error.endswith(f"{len(ingested.rows)} were prepared with other settings")


def test_score_and_report_without_a_champion(ingested: IngestedLake, delivery: Path) -> None:
    lake = ingested.copy(delivery / "work")
    for command in (
        ["score", "inbox"],
        ["report", ingested.lake.feature_row(ingested.rows[0]).study_id],
    ):
        got = refused(delivery, _lake_env(lake), *command)
        assert got.error == "no champion model"
        assert got.hint == "run `radflow train` on labelled studies first"


def test_report_of_an_unknown_study(ingested: IngestedLake, tmp_path: Path) -> None:
    lake = ingested.copy(tmp_path / "work")
    got = refused(tmp_path, _lake_env(lake), "report", "RF-NOSUCHSTUDY")
    assert got.error.startswith("no study RF-NOSUCHSTUDY in the catalog")


# ----------------------------------------------------------------------------------- S3


def _s3_env(endpoint: str, with_credentials: bool = True) -> dict[str, str]:
    env = {
        "RADFLOW_SECRET": SECRET,
        "RADFLOW_S3_ENDPOINT_URL": endpoint,
        "RADFLOW_S3_REGION": S3_REGION,
    }
    if with_credentials:
        env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return env


def test_ingest_from_a_bucket_that_does_not_exist(moto_server: str, tmp_path: Path) -> None:
    got = refused(tmp_path, _s3_env(moto_server), "ingest", "s3://no-such-bucket-here/inbox")
    assert got.error == f"no bucket no-such-bucket-here (the delivery) on {moto_server}"
    assert "bucket's name" in got.hint


def test_a_lake_bucket_that_does_not_exist(moto_server: str, tmp_path: Path) -> None:
    env = {**_s3_env(moto_server), "RADFLOW_STORE_URL": "s3://no-such-lake/lake"}
    got = refused(tmp_path, env, "train")
    assert got.error == f"no bucket no-such-lake (the lake, RADFLOW_STORE_URL) on {moto_server}"


def test_ingest_from_s3_without_credentials(
    moto_server: str, s3_bucket: str, s3_client: object, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="inbox/a.dcm", Body=b"x")  # type: ignore[attr-defined]
    env = _s3_env(moto_server, with_credentials=False)
    got = refused(tmp_path, env, "ingest", f"s3://{s3_bucket}/inbox")
    assert got.error == f"bucket {s3_bucket} (the delivery): no S3 credentials found"
    assert "AWS_ACCESS_KEY_ID" in got.hint


def test_ingest_from_an_endpoint_that_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    got = refused(tmp_path, _s3_env(endpoint), "ingest", "s3://bucket/inbox")
    assert got.error.startswith(f"bucket bucket (the delivery): cannot reach {endpoint}")
    assert "RADFLOW_S3_ENDPOINT_URL" in got.hint


def test_an_empty_s3_prefix(moto_server: str, s3_bucket: str, tmp_path: Path) -> None:
    got = refused(tmp_path, _s3_env(moto_server), "ingest", f"s3://{s3_bucket}/inbox")
    assert got.error == "the delivery holds no files"
