"""What each flow command checks before it imports Prefect or starts a server.

A user's mistake (a setting, the secret, a folder or bucket that is not there, a labels or
masks file, a lake that holds too little to train on or no champion to score with) found
inside a flow costs a server start-up and a traceback; found here it costs about a second
and is one `RadflowError`, which the CLI prints as one line and a hint. The flows make the
same checks again where they meet the data: this module only moves the common mistakes
forward. It never imports Prefect (tests assert it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from radflow.config import Settings, load_settings
from radflow.errors import NotFoundError, RadflowError
from radflow.lake import Lake
from radflow.store import ObjectStore, S3Store, open_store

# `radflow.models.splits.three_way_split` needs 2 patients of each class after the test
# split, which takes at least one of each: fewer than 3 per class never splits. Checked by
# counting first, so that this common mistake does not wait for scikit-learn to import.
MIN_PATIENTS_PER_CLASS = 3


@dataclass(frozen=True)
class Checked:
    """What the checks found, for the command to run its flow with."""

    settings: Settings
    source: tuple[str, str] = ("", "")  # (store URL, listing prefix) of a delivery


def source_location(source: str) -> tuple[str, str]:
    """A folder or s3://bucket/prefix -> (store URL, listing prefix); the folder must exist."""
    if source.startswith("s3://"):
        parsed = urlparse(source)
        if not parsed.netloc:
            raise RadflowError(f"bad source {source!r}: no bucket", hint="use s3://bucket/prefix")
        prefix = parsed.path.strip("/")
        return f"s3://{parsed.netloc}", f"{prefix}/" if prefix else ""
    if "://" in source:
        raise RadflowError(
            f"bad source {source!r}", hint="give a folder or an s3://bucket/prefix URI"
        )
    folder = Path(source)
    if not folder.is_dir():
        raise NotFoundError(f"no folder at {source}", hint="give a folder of DICOM files")
    return folder.resolve().as_uri(), ""


# --------------------------------------------------------------------------------- checks


def check_secret(settings: Settings) -> None:
    """The pseudonymisation secret is set and readable by its owner only. A Prefect Secret
    block is read inside the flow (radflow's core never imports Prefect)."""
    if settings.secret_block and settings.secret is None and settings.secret_file is None:
        return
    settings.pseudonym_secret()


def open_checked(url: str, settings: Settings, what: str) -> ObjectStore:
    """The store at `url`; for S3, its bucket answered (one quick try, not the flows'
    retries: a mistake should not take a minute to report)."""
    quick = replace(
        settings.s3_options(),
        max_attempts=2,
        connect_timeout=min(settings.s3_connect_timeout, 3.0),
        read_timeout=min(settings.s3_read_timeout, 10.0),
    )
    store = open_store(url, quick)
    if isinstance(store, S3Store):
        check_bucket(store, what, settings.s3_endpoint_url)
    return store


_DENIED = ("403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch")


def check_bucket(store: S3Store, what: str, endpoint: str | None) -> None:
    """head_bucket, with a hint for each way it fails: no such bucket, no or wrong
    credentials, an endpoint that does not answer."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = f"bucket {store.bucket} ({what})"
    server = endpoint or "AWS S3"
    try:
        store.client.head_bucket(Bucket=store.bucket)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", "?"))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise NotFoundError(
                f"no {where} on {server}",
                hint="check the bucket's name, or create it (aws s3 mb s3://BUCKET)",
            ) from None
        if code in (
            "403",
            "AccessDenied",
            "Forbidden",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ):
            raise RadflowError(
                f"{where}: access denied ({code})",
                hint="check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or"
                " AWS_PROFILE) and the bucket's policy",
            ) from None
        raise RadflowError(
            f"{where}: {code}", hint="check RADFLOW_S3_ENDPOINT_URL and RADFLOW_S3_REGION"
        ) from None
    except (NoCredentialsError, PartialCredentialsError):
        raise RadflowError(
            f"{where}: no S3 credentials found",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
        ) from None
    except ConnectionError as err:
        raise RadflowError(
            f"{where}: cannot reach {server} ({type(err).__name__})",
            hint="check RADFLOW_S3_ENDPOINT_URL and the network",
        ) from None
    except BotoCoreError as err:
        raise RadflowError(
            f"{where}: {type(err).__name__}",
            hint="check RADFLOW_S3_ENDPOINT_URL, RADFLOW_S3_REGION and the credentials",
        ) from None


def check_delivery(source: str, settings: Settings) -> tuple[str, str]:
    """The delivery exists and holds at least one file."""
    url, prefix = source_location(source)
    store = open_checked(url, settings, "the delivery")
    if isinstance(store, S3Store):
        empty = next(iter(store.list(prefix)), None) is None  # one page, not the whole listing
    else:  # a folder: stop at its first file (LocalStore.list sorts the whole listing)
        empty = not any(p.is_file() for p in Path(source).rglob("*"))
    if empty:
        raise NotFoundError(
            "the delivery holds no files", hint="give the folder or prefix the studies are in"
        )
    return url, prefix


def check_labels(path: Path | None, masks: Path | None) -> None:
    """The labels and masks CSVs, read whole as the flow will read them."""
    if path is not None:
        from radflow.labels_csv import read_labels_csv

        read_labels_csv(path)
    if masks is not None:
        from radflow.annotations.masks_csv import read_masks_csv

        read_masks_csv(masks)


def check_trainable(lake: Lake, settings: Settings) -> None:
    """The lake's current, labelled rows (as the dataset stage will build them) are enough
    to split by patient into fit, validation and test."""
    from radflow.stages.dataset import dataset_table, expected_settings

    keys = lake.current_features()
    if not keys:
        raise NotFoundError(
            "the lake holds no prepared studies",
            hint="ingest a delivery with its labels first: radflow ingest DELIVERY --labels CSV",
        )
    table = dataset_table(lake, keys, *expected_settings(settings))
    if not table.rows:
        why = (
            f"{len(table.stale_studies)} were prepared with other settings"
            if table.stale_studies
            else "none has a label"
        )
        raise RadflowError(
            f"no labelled studies to train on: of {len(keys)} studies in the lake, {why}",
            hint="ingest with --labels CSV (study_uid,label), with the settings of the ingest run",
        )
    patients: dict[int, set[str]] = {0: set(), 1: set()}
    for row in table.rows:
        patients.setdefault(row.label, set()).add(row.patient_id)
    per_class = {label: len(ids) for label, ids in patients.items()}
    if min(per_class.values()) < MIN_PATIENTS_PER_CLASS:
        counts = ", ".join(f"{n} with label {label}" for label, n in sorted(per_class.items()))
        raise RadflowError(
            f"too few labelled patients to split into fit, validation and test: {counts}",
            hint=f"label at least {MIN_PATIENTS_PER_CLASS} patients of each class"
            " (20 or more for a meaningful test)",
        )
    from radflow.models.table import training_table

    training_table(table, settings.train)  # the split itself, as training will make it


# ------------------------------------------------------------------------- per command


def _lake(settings: Settings) -> Lake:
    return Lake(open_checked(settings.store_url, settings, "the lake, RADFLOW_STORE_URL"))


def for_ingest(source: str, labels: Path | None, masks: Path | None) -> Checked:
    """The cheap, local mistakes first: the source's form, the CSVs, the settings."""
    source_location(source)
    check_labels(labels, masks)
    settings = load_settings()
    check_secret(settings)
    location = check_delivery(source, settings)
    _lake(settings)
    return Checked(settings, location)


def for_train() -> Checked:
    settings = load_settings()
    check_trainable(_lake(settings), settings)
    return Checked(settings)


def for_score(source: str | None) -> Checked:
    if source:
        source_location(source)
    settings = load_settings()
    check_secret(settings)
    location = check_delivery(source, settings) if source else ("", "")
    _lake(settings).champion()
    return Checked(settings, location)


def for_report(study_id: str) -> Checked:
    settings = load_settings()
    lake = _lake(settings)
    lake.study_features(study_id)
    lake.champion()
    return Checked(settings)
