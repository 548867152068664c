"""Ingest: a delivery in object storage -> de-identified, preprocessed studies and features."""

from __future__ import annotations

from prefect import flow, unmapped

from flows.outcomes import prepared
from flows.runtime.tag_checks import connect_tag_checks
from radflow.delivery import Prepared
from radflow.keys import short_id
from tasks.anonymize import anonymize, record_labels
from tasks.catalog import catalog
from tasks.features import features
from tasks.fetch import fetch
from tasks.preprocess import preprocess, roi_model


def prepare_studies(
    source: str, prefix: str = "", masks: str = "", segmentation: bool = True
) -> Prepared:
    """fetch -> anonymize -> register + preprocess (ROI: annotation, else the segmentation
    champion) -> extract, fanned out per study.

    A quarantined study drops out (its record is in the lake); a study whose stage failed
    unexpectedly is counted, and the others go on either way: the caller finishes them and
    then fails the run with `Prepared.raise_if_failed`. `masks`: a masks CSV's path, read
    inside fetch (its rows hold original UIDs). `segmentation=False`: no study takes its ROI
    from the segmentation champion (the demo's labelled delivery)."""
    connect_tag_checks(fetch, anonymize, preprocess, features, catalog)
    refs = fetch(source, prefix, masks)
    deid = anonymize.map(refs)
    volumes = preprocess.map(deid, unmapped(roi_model() if segmentation else ""))
    rows = features.map(volumes, deid)
    return prepared((source, prefix), refs, deid, volumes, rows)


def delivery_run_name(kind: str) -> str:
    """`<kind>-<hash of the delivery's location>`: delivery names may hold PHI."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    return f"{kind}-{short_id(params['source'] + '/' + params.get('prefix', ''))}"


def ingest_steps(
    source: str,
    prefix: str = "",
    labels: str | None = None,
    masks: str | None = None,
    segmentation: bool = True,
) -> list[str]:
    """labels -> prepare -> catalog; the feature keys of the delivery's studies."""
    if labels:
        record_labels(labels)
    studies = prepare_studies(source, prefix, masks or "", segmentation)
    catalog(studies.keys)
    studies.raise_if_failed()
    return studies.keys


@flow(name="ingest", flow_run_name=lambda: delivery_run_name("ingest"))
def ingest(
    source: str, prefix: str = "", labels: str | None = None, masks: str | None = None
) -> list[str]:
    """Labels (a local CSV of original StudyInstanceUID,label) are stored under pseudonyms;
    masks (a local CSV of original StudyInstanceUID,path[,label]) add each study's own
    annotation, which then is its region of interest."""
    return ingest_steps(source, prefix, labels, masks)
