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


def delivery_run_name(kind: str) -> str:
    """`<kind>-<hash of the delivery's location>`: delivery names may hold PHI."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    return f"{kind}-{short_id(params['source'] + '/' + params.get('prefix', ''))}"


def ingest_steps(source: str, prefix: str = "", labels: str | None = None) -> list[str]:
    """labels -> prepare -> catalog; the feature keys of the delivery's studies."""
    if labels:
        record_labels(labels)
    keys = prepare_studies(source, prefix)
    catalog(keys)
    return keys


@flow(name="ingest", flow_run_name=lambda: delivery_run_name("ingest"))
def ingest(source: str, prefix: str = "", labels: str | None = None) -> list[str]:
    """Labels (a local CSV of original StudyInstanceUID,label) are stored under pseudonyms."""
    return ingest_steps(source, prefix, labels)
