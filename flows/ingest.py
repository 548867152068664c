"""Ingest: a delivery in object storage -> de-identified, preprocessed studies and features."""

from __future__ import annotations

from prefect import flow, get_run_logger

from radflow.keys import short_id
from tasks.anonymize import anonymize, record_labels
from tasks.catalog import catalog
from tasks.features import features
from tasks.fetch import fetch
from tasks.volumes import preprocess


def prepare_studies(source: str, prefix: str = "") -> list[str]:
    """fetch -> anonymize -> register + preprocess -> extract, fanned out per study.

    Returns the feature keys of the studies that made it; a quarantined study drops out
    (its record is in the lake) and the others go on."""
    refs = fetch(source, prefix)
    deid = anonymize.map(refs)
    volumes = preprocess.map(deid)
    rows = features.map(deid, volumes)
    keys = [k for k in rows.result() if k]
    get_run_logger().info(
        "%d studies found, %d prepared, %d quarantined", len(refs), len(keys), len(refs) - len(keys)
    )
    return keys


def _name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    return f"ingest-{short_id(params['source'] + '/' + params.get('prefix', ''))}"


@flow(name="ingest", flow_run_name=_name, log_prints=False)
def ingest(source: str, prefix: str = "", labels: str | None = None) -> list[str]:
    """Labels (a local CSV of original StudyInstanceUID,label) are stored under pseudonyms."""
    if labels:
        record_labels(labels)
    keys = prepare_studies(source, prefix)
    catalog(keys)
    return keys
