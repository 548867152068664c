"""The PHI audit: real Prefect runs of ingest, train and score (and one failing task) on studies
with PHI in every place a pipeline can trip on, then a search of every byte Prefect and the lake
hold for every PHI string. Zero hits; and the same search finds each string in the raw inbox
(so it can fail) and the failure's original message in the worker's private log."""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pydicom
import pytest
from support.phi import phi_strings

from radflow.synth import SynthSpec, SynthStudy, synthesize

pytestmark = pytest.mark.flow

SECRET = "audit-secret-" + "5eedc0de" * 4
BLOCK = "radflow-audit-secret"
GEOMETRY = {"rows": 40, "columns": 40, "slices": 16}
# Injected on top of synth's PHI (MRNs, accession numbers, original UIDs in headers, folder
# names and the labels file): distinctive, so a case-insensitive search has no false hits.
FAMILY, GIVEN = "QUIRKSBY", "ZANTHEA"
INJECTED = {
    "FEATHERSTONE",  # referring and performing physician
    "TECHNOVAK",  # operator
    "WHISTLEDOWN INFIRMARY",  # institution
    "NETTLEBECK",  # its address
    "PRIVNOTEZEBRA",  # only in a private tag
    "SERIESWOMBAT",  # only in SeriesDescription
}
FAILURE_ONLY = "EXPLODINGMARMOT"  # only in the failing task's exception message


def inject(raw: Path, inbox: Path, studies: list[SynthStudy], tag: str) -> list[SynthStudy]:
    """Rewrite synth's studies into `inbox` with PHI in more places: the patient's name in the
    folder and file names, a private tag, SeriesDescription and the other free text."""
    out = []
    for i, study in enumerate(studies):
        files = []
        for path in study.files:
            ds = pydicom.dcmread(path)
            family = f"{FAMILY}{tag}{i}"
            ds.PatientName = f"{family}^{GIVEN}^M"
            ds.ReferringPhysicianName = ds.PerformingPhysicianName = "FEATHERSTONE^DR"
            ds.OperatorsName = "TECHNOVAK^IRMA"
            ds.InstitutionName = "WHISTLEDOWN INFIRMARY"
            ds.InstitutionAddress = "7 NETTLEBECK LANE^^SPRINGFIELD"
            who = f"{family} {GIVEN} {ds.PatientID}"
            ds.StudyDescription = f"CT CHEST for {who}"
            ds.SeriesDescription = f"AXIAL SERIESWOMBAT {who}"
            ds.ImageComments = f"Routine chest CT of {who}."
            block = ds.private_block(0x0011, "RADFLOW PHI AUDIT", create=True)
            block.add_new(0x10, "LO", f"PRIVNOTEZEBRA {who}")
            rel = path.relative_to(raw).parts  # <PatientID>/<Accession>/S<n>/IM0001.dcm
            folder = inbox / f"{rel[0]} {family}, {GIVEN}" / rel[1] / rel[2]
            folder.mkdir(parents=True, exist_ok=True)
            files.append(folder / f"{family}_{rel[1]}_{rel[3]}")
            ds.save_as(files[-1], enforce_file_format=True)
        out.append(replace(study, files=tuple(files)))
    return out


# ----------------------------------------------------------------------------- the search


def views(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """`data` and what it hides from a plain byte search: gzip members (NIfTI), deflated PDF
    streams, base64 runs (Prefect's pickled results, images inlined in HTML)."""
    yield data
    if depth > 2:
        return
    if data[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError, zlib.error):
            yield from views(gzip.decompress(data), depth + 1)
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", data, re.DOTALL):
        with contextlib.suppress(zlib.error):
            yield from views(zlib.decompress(stream), depth + 1)
    for run in re.findall(rb"[A-Za-z0-9+/]{32,}={0,2}", data):
        with contextlib.suppress(binascii.Error, ValueError):
            yield from views(base64.b64decode(run + b"=" * (-len(run) % 4)), depth + 1)


def hits(needles: set[str], blobs: dict[str, bytes]) -> dict[str, list[str]]:
    """needle -> the names of the blobs (and of their decoded views) that hold it, ignoring
    case, plain or percent-encoded."""
    forms = {n: {n.lower().encode(), quote(n).lower().encode()} for n in needles}
    found: dict[str, list[str]] = {}
    for name, blob in blobs.items():
        for view in views(blob):
            low = view.lower() + b"\0" + name.lower().encode()
            for needle, variants in forms.items():
                if any(v in low for v in variants) and name not in found.get(needle, []):
                    found.setdefault(needle, []).append(name)
    return found


def files_of(root: Path, label: str) -> dict[str, bytes]:
    """Every file under `root`, named `label:<path>` (so its path is searched too)."""
    return {
        f"{label}:{p.relative_to(root)}": p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def prefect_records() -> dict[str, bytes]:
    """Everything the Prefect API gives back: flow and task runs (names, parameters, every
    state with its message), results, logs, artifacts, events, block documents."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter

    out: dict[str, bytes] = {}

    def paged(read: Any, **kw: Any) -> list[Any]:
        items: list[Any] = []
        while batch := read(limit=200, offset=len(items), **kw):
            items += batch
        return items

    with get_client(sync_client=True) as client:
        for run in paged(client.read_flow_runs):
            out[f"flow-run:{run.id}"] = run.model_dump_json().encode()
            for state in client.read_flow_run_states(run.id):
                out[f"flow-state:{state.id}"] = state.model_dump_json().encode()
                if state.is_completed():
                    try:
                        out[f"flow-result:{state.id}"] = repr(state.result()).encode()
                    except Exception as err:  # an expired or unpersisted result
                        out[f"flow-result:{state.id}"] = repr(err).encode()
        for run in paged(client.read_task_runs):
            out[f"task-run:{run.id}"] = run.model_dump_json().encode()
            for state in client.read_task_run_states(run.id):
                out[f"task-state:{state.id}"] = state.model_dump_json().encode()
        for log in paged(client.read_logs):
            out[f"log:{log.id}"] = log.model_dump_json().encode()
        for art in paged(client.read_artifacts):
            out[f"artifact:{art.id}"] = art.model_dump_json().encode()
        for doc in client.read_block_documents(include_secrets=False):
            out[f"block:{doc.id}"] = doc.model_dump_json().encode()
        page = client.read_events(filter=EventFilter(), limit=50)
        while True:
            for event in page.events:
                out[f"event:{event.id}"] = event.model_dump_json().encode()
            if not page.next_page:
                break
            page = client.read_events_page(page.next_page)
    return out


def settle() -> None:
    """Send what the client still buffers, then wait until the server has stored it (task
    runs, logs and events arrive a moment after a flow returns)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import LogSort
    from prefect.events.filters import EventFilter
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    last: tuple[Any, ...] = ()
    with get_client(sync_client=True) as client:
        for _ in range(40):
            newest_log = client.read_logs(limit=1, sort=LogSort.TIMESTAMP_DESC)
            now = (
                client.request("POST", "/task_runs/count", json={}).json(),
                str(newest_log[0].id) if newest_log else "",
                client.read_events(filter=EventFilter(), limit=1).total,
            )
            if now == last:
                return
            last = now
            time.sleep(0.75)


# ----------------------------------------------------------------------------- the audit


def test_no_phi_leaves_the_inbox(
    prefect_server: None,
    pipeline_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_DATABASE_CONNECTION_URL

    import radflow.stages.anonymize as anonymize_stage
    from flows.ingest import ingest
    from flows.score import score_flow
    from flows.train import train_flow
    from tasks import runtime as _common

    tmp = pipeline_env
    inbox = tmp / "inbox"
    studies: dict[str, list[SynthStudy]] = {}
    for tag, n, seed in (("T", 12, 21), ("N", 2, 22), ("F", 1, 23)):
        raw = tmp / f"raw-{tag}"
        made = synthesize(
            raw, tmp / f"labels-{tag}.csv", SynthSpec(studies=n, seed=seed, **GEOMETRY)
        )
        studies[tag] = inject(raw, inbox / f"delivery-{tag}", made, tag)
    # A non-DICOM file named and filled with PHI: fetch quarantines it (an event, a record).
    first = studies["T"][0].files[0].parent
    (first / f"notes for {FAMILY}T0.txt").write_text(f"{FAMILY}T0 {GIVEN} called")
    every_study = [s for group in studies.values() for s in group]
    needles = phi_strings(every_study) | INJECTED | {FAMILY, GIVEN}
    assert {s.patient_id for s in every_study} <= needles and len(needles) > 40

    # The secret comes from a Prefect Secret block: it must not show anywhere either.
    Secret(value=SECRET).save(BLOCK, overwrite=True)
    monkeypatch.delenv("RADFLOW_SECRET_FILE")
    monkeypatch.setenv("RADFLOW_SECRET_BLOCK", BLOCK)
    monkeypatch.setenv("RADFLOW_TRAIN__CANDIDATES", '["lr"]')
    monkeypatch.setenv("RADFLOW_TRAIN__ENSEMBLE_SIZE", "0")
    _common.settings.cache_clear()

    source = inbox.as_uri()
    keys = ingest(source, "delivery-T/", str(tmp / "labels-T.csv"))
    assert len(keys) == 12
    assert _common.settings().pseudonym_secret() == SECRET.encode()
    trained = train_flow()
    assert trained["promoted"] is True
    assert len(score_flow(source, "delivery-N/")) == 2

    # One task fails with an exception that carries PHI, as pydicom's and the OS's do.
    def exploding_read(path: Path) -> Any:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        raise ValueError(f"{FAILURE_ONLY}: bad header of {ds.PatientName} ({ds.PatientID})")

    monkeypatch.setattr(anonymize_stage, "read_dicom", exploding_read)
    failed = ingest(source, "delivery-F/", return_state=True)
    assert failed.is_failed()
    settle()

    # Collect every byte: the API's records, Prefect's home (results, any log file), its
    # database with its WAL, the console (flow logs and the server's output), the lake.
    db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    blobs = prefect_records()
    anonymize_failures = [
        b for n, b in blobs.items() if n.startswith("task-run:") and b'"name":"anonymize-' in b
    ]
    assert any(b'"Failed"' in b and b"ScrubbedError" in b for b in anonymize_failures)
    assert any(b"anonymize failed with ValueError on input" in b for b in blobs.values())
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            blobs[f"database:{db.name}{suffix}"] = Path(f"{db}{suffix}").read_bytes()
    assert f"database:{db.name}" in blobs and len(blobs[f"database:{db.name}"]) > 100_000
    blobs |= files_of(Path(PREFECT_HOME.value()), "prefect-home")
    blobs |= files_of(tmp / "lake", "lake")
    # The console: Prefect's log records as its handlers format them, and the output of this
    # process and of the server's subprocess.
    console = capfd.readouterr()
    records = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.get_records("call"))
    blobs["console"] = (console.out + console.err + caplog.text + records).encode()
    assert "anonymize failed with ValueError" in caplog.text  # the failure's logs were seen
    assert any(n.startswith("event:") for n in blobs) and any(n.startswith("log:") for n in blobs)

    leaks = hits(needles | {FAILURE_ONLY, SECRET}, blobs)
    assert not leaks, {needle: where[:5] for needle, where in leaks.items()}

    # Positive controls: the search finds each string where it must be.
    raw_inbox = files_of(inbox, "inbox")
    found = hits(needles, raw_inbox)
    assert set(found) == needles
    assert {n for n, where in found.items() if any("/" in w and n in w for w in where)} >= {
        s.patient_id for s in every_study
    }  # in folder names too
    [log] = (tmp / "cache" / "errors").iterdir()
    assert FAILURE_ONLY in log.read_text() and str(studies["F"][0].patient_id) in log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600
    assert hits({FAILURE_ONLY, SECRET}, {"log": log.read_bytes(), "secret": SECRET.encode()}) == {
        FAILURE_ONLY: ["log"],
        SECRET: ["secret"],
    }
