"""Anonymize: a study's raw files -> its de-identified copy in the lake, `deid/<v>/<hash>/`.

The re-identification map (original patient id and study UID -> pseudonyms) goes to its own
local folder (mode 700, files 600), never beside the de-identified data.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from radflow.dicom.batch import deidentify_bytes, read_dicom
from radflow.dicom.deid import DeidConfig, Deidentifier, study_pseudonym
from radflow.errors import QuarantineError
from radflow.keys import address, secret_fingerprint, sha256_file
from radflow.privacy import write_private
from radflow.records import QuarantineRecord, SeriesEntry, StudyManifest
from radflow.stages.fetch import study_files
from radflow.stages.quarantine import record
from radflow.store import ObjectStore

MANIFEST = "study.json"


def deid_address(ref: str, config: DeidConfig) -> str:
    return address(
        "deid", [ref], {**config.describe(), "secret": secret_fingerprint(config.secret)}
    )


def read_manifest(store: ObjectStore, deid: str) -> StudyManifest:
    return StudyManifest.model_validate_json(store.get_bytes(f"{deid}/{MANIFEST}"))


def write_reid_entry(reid_dir: Path, study_id: str, entry: dict[str, str]) -> None:
    """One study's map entry (PHI): the folder mode 700, the file 600, even if they existed."""
    write_private(reid_dir / f"{study_id}.json", json.dumps(entry, sort_keys=True))


def anonymize_study(
    store: ObjectStore, cache_dir: Path, ref: str, config: DeidConfig, reid_dir: Path
) -> str:
    """De-identify every instance of a study; the manifest, written last, commits the output.

    An instance that cannot be de-identified (unreadable, possible burned-in text) is
    quarantined alone; the study goes on without it unless nothing is left."""
    out = deid_address(ref, config)
    if store.exists(f"{out}/{MANIFEST}"):
        return out
    deid = Deidentifier(config)
    series: Counter[tuple[str, str]] = Counter()
    identities: set[tuple[str, str, str, str]] = set()
    written: set[str] = set()
    for path in study_files(cache_dir, ref):
        try:
            ds = read_dicom(path)
            modality = str(ds.get("Modality", "OT"))
            data, (study, series_uid, sop, pid, pseudo, orig_study) = deidentify_bytes(ds, deid)
            if f"{series_uid}/{sop}" in written:  # never overwrite an instance already written
                raise QuarantineError("duplicate SOP instance", "a second file of one instance")
        except QuarantineError as err:
            source = "raw-sha256:" + sha256_file(path)  # the key may hold PHI; the content hash not
            record(
                store,
                QuarantineRecord.for_key("", source, "anonymize", err.reason, type(err).__name__),
            )
            continue
        identities.add((pid, pseudo, orig_study, study))
        series[(series_uid, modality)] += 1
        written.add(f"{series_uid}/{sop}")
        store.put_bytes(f"{out}/{series_uid}/{sop}.dcm", data)
    if not identities:
        raise QuarantineError("no usable instance", "every instance of the study was quarantined")
    if len({i[0] for i in identities}) != 1:
        raise QuarantineError("inconsistent study", "more than one patient id in one study")
    ((pid, pseudo, orig_study, study),) = identities
    study_id = study_pseudonym(config.secret, orig_study)
    write_reid_entry(
        reid_dir,
        study_id,
        {
            "patient_id": pid,
            "patient_pseudonym": pseudo,
            "study_uid": orig_study,
            "study_pseudonym_uid": study,
            "study_id": study_id,
        },
    )
    manifest = StudyManifest(
        study_id=study_id,
        study_uid=study,
        patient_id=pseudo,
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
