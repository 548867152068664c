"""Anonymize: a study's raw files -> its de-identified copy in the lake, `deid/<v>/<hash>/`."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pydicom

from radflow.dicom.anonymize import METHOD, anonymize_dataset, study_pseudonym
from radflow.errors import QuarantineError
from radflow.keys import address, secret_fingerprint
from radflow.records import SeriesEntry, StudyManifest
from radflow.stages.fetch import study_files
from radflow.store import ObjectStore

MANIFEST = "study.json"


def deid_address(ref: str, secret: bytes) -> str:
    return address("deid", [ref], {"method": METHOD, "secret": secret_fingerprint(secret)})


def read_manifest(store: ObjectStore, deid: str) -> StudyManifest:
    return StudyManifest.model_validate_json(store.get_bytes(f"{deid}/{MANIFEST}"))


def anonymize_study(store: ObjectStore, cache_dir: Path, ref: str, secret: bytes) -> str:
    """De-identify every instance of a study; the manifest, written last, commits the output."""
    out = deid_address(ref, secret)
    if store.exists(f"{out}/{MANIFEST}"):
        return out
    series: Counter[tuple[str, str]] = Counter()
    study_uids: set[str] = set()
    patients: set[str] = set()
    for path in study_files(cache_dir, ref):
        ds = pydicom.dcmread(path)
        study_uids.add(str(ds.StudyInstanceUID))
        anonymize_dataset(ds, secret)
        patients.add(str(ds.PatientID))
        series[(str(ds.SeriesInstanceUID), str(ds.get("Modality", "OT")))] += 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        store.put_bytes(f"{out}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm", buf.getvalue())
    if len(patients) != 1:
        raise QuarantineError("inconsistent study", f"{len(patients)} patient ids in one study")
    (original_uid,) = study_uids
    manifest = StudyManifest(
        study_id=study_pseudonym(secret, original_uid),
        study_uid=str(ds.StudyInstanceUID),
        patient_id=patients.pop(),
        series=[
            SeriesEntry(series_uid=s, modality=m, instances=n)
            for (s, m), n in sorted(series.items())
        ],
    )
    store.put_text(f"{out}/{MANIFEST}", manifest.model_dump_json(indent=1))
    return out


def store_labels(store: ObjectStore, labels_csv: str, secret: bytes) -> int:
    """Labels keyed by original StudyInstanceUID -> `labels/<study_id>.json`, keyed by pseudonym."""
    count = 0
    for row in csv.DictReader(io.StringIO(labels_csv)):
        if set(row) < {"study_uid", "label"}:
            raise QuarantineError("bad labels file", "columns must be study_uid,label")
        study_id = study_pseudonym(secret, row["study_uid"].strip())
        store.put_text(f"labels/{study_id}.json", f'{{"label": {int(row["label"])}}}')
        count += 1
    return count


def read_label(store: ObjectStore, study_id: str) -> int | None:
    key = f"labels/{study_id}.json"
    if not store.exists(key):
        return None
    return int(json.loads(store.get_text(key))["label"])
