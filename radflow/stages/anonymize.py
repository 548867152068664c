"""Anonymize: a study's raw files -> its de-identified copy in the lake, `deid/<v>/<hash>/`.

The re-identification map (original patient id and study UID -> pseudonyms) goes to its own
local folder (mode 700, files 600), never beside the de-identified data.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from radflow.annotations.labelmap import write_deidentified_labelmap
from radflow.config import Settings
from radflow.dicom.batch import deidentify_bytes, read_dicom
from radflow.dicom.deid import DeidConfig, Deidentifier, DeidResult, study_pseudonym
from radflow.errors import QuarantineError
from radflow.keys import address as content_address
from radflow.keys import secret_fingerprint, sha256_file
from radflow.lake import Lake
from radflow.lake.records import QuarantineRecord, SeriesEntry, StudyManifest
from radflow.privacy import write_private
from radflow.raw_cache import study_files, study_labelmap
from radflow.scratch import scratch_dir

NAME = "anonymize"


def deid_address(ref: str, config: DeidConfig) -> str:
    return content_address(
        "deid", [ref], {**config.describe(), "secret": secret_fingerprint(config.secret)}
    )


def address(settings: Settings, ref: str) -> str:
    return deid_address(ref, settings.deid_config())


def run(lake: Lake, settings: Settings, ref: str) -> str:
    return anonymize_study(
        lake, settings.cache_dir, ref, settings.deid_config(), settings.deid.reid_dir
    )


def write_reid_entry(reid_dir: Path, study_id: str, entry: str) -> None:
    """One study's map entry (PHI): the folder mode 700, the file 600, even if they existed."""
    write_private(reid_dir / f"{study_id}.json", entry)


def anonymize_study(
    lake: Lake, cache_dir: Path, ref: str, config: DeidConfig, reid_dir: Path
) -> str:
    """De-identify every instance of a study; the manifest, written last, commits the output.

    An instance that cannot be de-identified (unreadable, possible burned-in text) is
    quarantined alone; the study goes on without it unless nothing is left. A label map
    given with the study (`ingest --masks`) that cannot be used quarantines the study: it
    was meant to be the study's region of interest."""
    out = deid_address(ref, config)
    if lake.has(out):
        return out
    deid = Deidentifier(config)
    series: Counter[tuple[str, str]] = Counter()
    identities: dict[tuple[str, str, str, str], DeidResult] = {}
    written: set[str] = set()
    for path in study_files(cache_dir, ref):
        try:
            ds = read_dicom(path)
            modality = str(ds.get("Modality", "OT"))
            data, ids = deidentify_bytes(ds, deid)
            if f"{ids.series_uid}/{ids.sop_uid}" in written:  # never overwrite an instance
                raise QuarantineError("duplicate SOP instance", "a second file of one instance")
        except QuarantineError as err:
            source = "raw-sha256:" + sha256_file(path)  # the key may hold PHI; the content hash not
            lake.quarantine(QuarantineRecord.of_error("", source, NAME, err))
            continue
        identity = (ids.original_patient_id, ids.patient_id, ids.original_study_uid, ids.study_uid)
        identities.setdefault(identity, ids)
        series[(ids.series_uid, modality)] += 1
        written.add(f"{ids.series_uid}/{ids.sop_uid}")
        lake.put_instance(out, ids.series_uid, ids.sop_uid, data)
    if not identities:
        raise QuarantineError("no usable instance", "every instance of the study was quarantined")
    if len({i[0] for i in identities}) != 1:
        raise QuarantineError("inconsistent study", "more than one patient id in one study")
    (ids,) = identities.values()
    _put_labelmap(lake, cache_dir, ref, out)
    study_id = study_pseudonym(config.secret, ids.original_study_uid)
    write_reid_entry(reid_dir, study_id, ids.reid_entry(config.secret))
    manifest = StudyManifest(
        study_id=study_id,
        study_uid=ids.study_uid,
        patient_id=ids.patient_id,
        series=[
            SeriesEntry(series_uid=s, modality=m, instances=n)
            for (s, m), n in sorted(series.items())
        ],
    )
    lake.put_manifest(out, manifest)
    return out


def _put_labelmap(lake: Lake, cache_dir: Path, ref: str, out: str) -> None:
    """The study's label map, if it has one, de-identified into the study (voxels and
    geometry only, of the chosen label alone when one was given); before the manifest."""
    found = study_labelmap(cache_dir, ref)
    if found is None:
        return
    source, label = found
    with scratch_dir("labelmap") as tmp:
        clean = tmp / "labelmap.nii.gz"
        write_deidentified_labelmap(source, clean, label)
        lake.put_study_labelmap(out, clean)
