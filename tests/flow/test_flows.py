"""Real Prefect runs of the ingest, train and score flows on synthetic DICOM studies."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import SimpleITK as sitk
from support.lakes import TrainedLake
from support.phi import phi_strings
from support.realstudies import PYDICOM_FILES

from radflow.config import PreprocessParams
from radflow.keys import short_id
from radflow.synth import SynthSpec, SynthStudy, synthesize

pytestmark = pytest.mark.flow

SPEC = SynthSpec(studies=3, rows=48, columns=48, slices=24, seed=7)


def _task_runs(flow_run_id: UUID, expected: int) -> list[Any]:
    """The flow run's finished task runs, read back through the API (states arrive as events)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        for _ in range(100):
            runs = [r for r in client.read_task_runs(flow_run_filter=flt) if r.state]
            if sum(r.state.is_final() for r in runs) >= expected:
                break
            time.sleep(0.2)
    return [r for r in runs if r.state.is_final()]


def _task_states(flow_run_id: UUID, expected: int) -> dict[str, str]:
    """Task run name -> state name."""
    return {r.name: r.state.name for r in _task_runs(flow_run_id, expected)}


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def inbox(pipeline_env: Path) -> tuple[Path, Path, list[SynthStudy]]:
    studies = synthesize(pipeline_env / "inbox", pipeline_env / "labels.csv", SPEC)
    return pipeline_env / "inbox", pipeline_env / "labels.csv", studies


def test_ingest_outputs_then_cached_rerun(prefect_server: None, inbox: Any) -> None:
    from flows.ingest import ingest

    folder, labels, studies = inbox
    lake = folder.parent / "lake"
    state = ingest(folder.as_uri(), "", str(labels), return_state=True)
    keys = state.result()
    assert len(keys) == len(studies) == 3

    params = PreprocessParams()
    for key in keys:
        row = json.loads((lake / key).read_text())
        assert len(row["study_id"]) == 12 and row["patient_id"].startswith("RF-")
        assert row["features"]["original_firstorder_Mean"] > 80  # the lesion, in HU
        image = sitk.ReadImage(str(lake / row["volume"] / "image.nii.gz"))
        assert image.GetSize() == params.shape
        assert image.GetSpacing() == pytest.approx(params.spacing_mm)
        mask = sitk.ReadImage(str(lake / row["volume"] / "mask.nii.gz"))
        assert sitk.GetArrayViewFromImage(mask).sum() > 0
    deid_files = list((lake / "deid").rglob("*.dcm"))
    assert len(deid_files) == sum(len(s.files) for s in studies)
    assert len(list((lake / "labels").iterdir())) == 3
    assert len(list((lake / "catalog").iterdir())) == 3

    # No PHI anywhere in the lake, in any object's bytes.
    phi = phi_strings(studies)
    for path in lake.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [s for s in phi if s.encode() in data]
            assert not leaked, f"{path.relative_to(lake)} holds PHI"

    before = _snapshot(lake)
    rerun = ingest(folder.as_uri(), "", str(labels), return_state=True)
    assert rerun.result() == keys
    states = _task_states(rerun.state_details.flow_run_id, expected=13)
    cached = {name for name, s in states.items() if s == "Cached"}
    assert {n.split("-")[0] for n in cached} == {
        "labels",
        "fetch",
        "anonymize",
        "preprocess",
        "features",
    }
    assert len(cached) == 1 + 1 + 3 * 3
    assert states["catalog"] == "Completed"
    assert states["roi-model"] == "Completed"  # the segmentation champion, read each time
    assert _snapshot(lake) == before  # nothing rewritten, not even touched


def test_a_deleted_lake_is_rebuilt_not_taken_from_prefects_cache(
    prefect_server: None, inbox: Any
) -> None:
    """Prefect's cache records live in its own storage and outlive the lake: after a user
    deletes the lake (then the lake and the cache folder) a re-run rebuilds every output
    instead of showing Cached for objects that are gone, to the same bytes."""
    from flows.ingest import ingest

    folder, labels, _ = inbox
    # A real CT of one slice too: set aside by preprocess, a record the re-run must write again.
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", folder / "CT_small.dcm")
    lake, cache = folder.parent / "lake", folder.parent / "cache"
    keys = ingest(folder.as_uri(), "", str(labels))
    first = {name: data for name, (_, data) in _snapshot(lake).items()}
    assert len(list((lake / "quarantine" / "preprocess").iterdir())) == 1

    for deleted in ([lake], [lake, cache]):
        for folder_ in deleted:
            shutil.rmtree(folder_)
        state = ingest(folder.as_uri(), "", str(labels), return_state=True)
        assert state.result() == keys
        states = _task_states(state.state_details.flow_run_id, expected=13)
        cached = {name.split("-")[0] for name, s in states.items() if s == "Cached"}
        assert cached == (set() if cache in deleted else {"fetch"})  # its cache folder kept
        assert {name: data for name, (_, data) in _snapshot(lake).items()} == first


def test_changed_parameter_recomputes_only_downstream(
    prefect_server: None, inbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingest import ingest
    from tasks import runtime as _common

    folder, labels, _ = inbox
    first = ingest(folder.as_uri(), "", str(labels))
    monkeypatch.setenv("RADFLOW_FEATURES__BIN_WIDTH", "10")
    _common.settings.cache_clear()
    state = ingest(folder.as_uri(), "", str(labels), return_state=True)
    second = state.result()
    assert set(first).isdisjoint(second)  # new feature addresses
    states = _task_states(state.state_details.flow_run_id, expected=12)
    assert {s for n, s in states.items() if n.startswith("preprocess")} == {"Cached"}
    assert {s for n, s in states.items() if n.startswith("features")} == {"Completed"}


def test_bad_file_is_quarantined_and_flow_goes_on(prefect_server: None, inbox: Any) -> None:
    from flows.ingest import ingest

    folder, labels, _ = inbox
    junk = folder / "MRN0000000" / "junk.dcm"
    junk.parent.mkdir()
    junk.write_bytes(b"not a dicom file at all")
    truncated = folder / "MRN0000000" / "truncated.dcm"
    first_file = next(folder.rglob("IM0001.dcm"))
    truncated.write_bytes(first_file.read_bytes()[:100])
    keys = ingest(folder.as_uri(), "", str(labels))
    assert len(keys) == 3
    records = list((folder.parent / "lake" / "quarantine" / "fetch").iterdir())
    assert len(records) == 2
    for rec in records:
        body = json.loads(rec.read_text())
        assert body["reason"] in {"not a DICOM instance", "unreadable file"}
        assert "MRN" not in rec.read_text()
    assert junk.read_bytes() == b"not a dicom file at all"  # the raw input is untouched

    # For people watching: an event per quarantined input, and the run's delivery summary.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import ArtifactSort
    from prefect.events.filters import EventFilter, EventNameFilter

    wanted = EventFilter(event=EventNameFilter(name=["radflow.study.quarantined"]))
    records_named = {f"quarantine/fetch/{rec.name}" for rec in records}
    with get_client(sync_client=True) as client:
        for _ in range(50):  # the server stores events a moment after they are sent
            events = client.read_events(filter=wanted, limit=50).events
            if records_named <= {e.payload.get("record") for e in events}:
                break
            time.sleep(0.2)
        summary = client.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=50)
    ours = [e for e in events if e.payload.get("record") in records_named]
    assert len(ours) == 2
    assert {e.payload["reason"] for e in ours} <= {"not a DICOM instance", "unreadable file"}
    assert all("MRN" not in e.model_dump_json() for e in ours)
    [latest] = [a for a in summary if a.key == "radflow-delivery-summary"][:1]
    assert "| studies seen | 3 |" in str(latest.data)
    assert "| prepared | 3 |" in str(latest.data)


def _first_call_raises(real: Any, error: Exception) -> Any:
    """`real`, except that its first call (of the fanned-out studies, whichever comes first)
    raises `error`."""
    import threading

    lock, calls = threading.Lock(), []

    def wrapper(*args: Any) -> Any:
        with lock:
            calls.append(args)
            if len(calls) == 1:
                raise error
        return real(*args)

    return wrapper


def test_one_study_failing_unexpectedly_holds_up_no_other(
    prefect_server: None, inbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not bad input but an error (a bug, a lost disk): the other studies are finished and
    catalogued, then the run fails saying how many did not make it."""
    import radflow.stages.features as features_stage
    from flows.ingest import ingest

    real = features_stage.run  # what the features task calls, looked up at each call
    monkeypatch.setattr(features_stage, "run", _first_call_raises(real, OSError("disk went away")))
    folder, labels, _ = inbox
    state = ingest(folder.as_uri(), "", str(labels), return_state=True)
    assert state.is_failed()
    assert "1 of 3 studies failed unexpectedly (1 features: OSError); the others are done" in str(
        state.message
    )
    lake = folder.parent / "lake"
    assert len(list((lake / "catalog").iterdir())) == 2
    assert not (lake / "quarantine").exists()  # an error is not the input's fault

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=20)
    [summary] = [a for a in artifacts if a.key == "radflow-delivery-summary"][:1]
    assert "| prepared | 2 |" in str(summary.data)
    assert "| failed (an error, not the input: see the failed task runs) | 1 |" in str(summary.data)
    assert "| failed: features: OSError | 1 |" in str(summary.data)
    assert "disk went away" not in str(summary.data) + str(state.message)

    monkeypatch.setattr(features_stage, "run", real)
    assert len(ingest(folder.as_uri(), "", str(labels))) == 3  # fixed: the run goes through


def test_a_study_whose_scoring_breaks_holds_up_no_other(
    prefect_server: None,
    inbox: Any,
    pipeline_env: Path,
    trained: TrainedLake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same at scoring (the load test found a NaN feature row breaking the model): the
    others get their reports, then the run fails saying how many did not."""
    import radflow.stages.score as score_stage
    from flows.score import score_flow

    trained.copy(pipeline_env)  # a champion in this lake
    breaking = _first_call_raises(score_stage.run, ValueError("Input X contains NaN."))
    monkeypatch.setattr(score_stage, "run", breaking)
    folder, _, studies = inbox
    reported = set((pipeline_env / "lake").glob("reports/*/*/study.html"))
    state = score_flow(folder.as_uri(), "", return_state=True)
    assert state.is_failed()
    assert f"1 of {len(studies)} studies failed unexpectedly (1 score: ValueError);" in str(
        state.message
    )
    new = set((pipeline_env / "lake").glob("reports/*/*/study.html")) - reported
    assert len(new) == len(studies) - 1


def test_train_and_score_from_s3(
    prefect_server: None,
    pipeline_env: Path,
    moto_server: str,
    s3_client: Any,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole path with the inbox and the lake in S3, over HTTP to the moto server."""
    from flows.ingest import ingest
    from flows.score import score_flow
    from flows.train import train_flow
    from tasks import runtime as _common

    spec = SynthSpec(studies=12, rows=40, columns=40, slices=8, slice_thickness=4.0, seed=3)
    train_studies = synthesize(pipeline_env / "train", pipeline_env / "labels.csv", spec)
    synthesize(
        pipeline_env / "new",
        pipeline_env / "new.csv",
        SynthSpec(**{**spec.__dict__, "studies": 2, "seed": 99}),
    )
    for sub in ("train", "new"):
        for path in (pipeline_env / sub).rglob("*.dcm"):
            key = f"inbox/{sub}/{path.relative_to(pipeline_env / sub)}"
            s3_client.upload_file(str(path), s3_bucket, key)
    monkeypatch.setenv("RADFLOW_STORE_URL", f"s3://{s3_bucket}/lake")
    monkeypatch.setenv("RADFLOW_S3_ENDPOINT_URL", moto_server)
    _common.settings.cache_clear()
    _common.lake.cache_clear()

    keys = ingest(f"s3://{s3_bucket}", "inbox/train/", str(pipeline_env / "labels.csv"))
    assert len(keys) == len(train_studies)
    trained = train_flow()
    assert trained["promoted"] is True
    reports = score_flow(f"s3://{s3_bucket}", "inbox/new/")
    assert len(reports) == 2
    # `radflow results` names an S3 lake's reports by URL, and finds the delivery by its URI.
    from radflow.results import delivery_id, result_rows

    rows = result_rows(_common.lake(), delivery_id(f"s3://{s3_bucket}/inbox/new"))
    assert {r.reports["html"] for r in rows} == {f"s3://{s3_bucket}/lake/{k}" for k in reports}
    lake_keys = {
        o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="lake/")["Contents"]
    }
    assert "lake/models/champion.json" in lake_keys
    for key in reports:
        html = s3_client.get_object(Bucket=s3_bucket, Key=f"lake/{key}")["Body"].read().decode()
        assert trained["model_id"] in html
        assert "Research use only" in html
        folder = key.rsplit("/", 1)[0]
        for name in ("study.pdf", "sr.dcm", "report-pdf.dcm"):
            assert f"lake/{folder}/{name}" in lake_keys

    # Artifacts on the runs: the candidates table, the promotion, one link per study report.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        newest_first = client.read_artifacts(sort=ArtifactSort.CREATED_DESC)
    artifacts: dict[str, Any] = {}
    for artifact in newest_first:  # other tests of the session use the same keys
        if artifact.key:
            artifacts.setdefault(artifact.key, artifact)
    assert artifacts["radflow-candidates"].type == "table"
    assert trained["model_id"] in str(artifacts["radflow-promotion"].data)
    scored = [
        json.loads(s3_client.get_object(Bucket=s3_bucket, Key=k)["Body"].read())["study_id"]
        for k in lake_keys
        if k.startswith("lake/scores/")
    ]
    linked = [artifacts[f"radflow-report-{short_id(study)}"] for study in scored]
    assert len(linked) == 2
    assert all("sr.dcm" in str(a.data) and "score" in str(a.data) for a in linked)


@pytest.fixture
def environ_restored() -> Iterator[None]:
    """Dask's LocalCluster leaves OMP_NUM_THREADS=1 (and MKL_, OPENBLAS_, PYTHONHASHSEED...) in
    this process's environment: every child process started later would inherit them (the CNN
    resume test's child then computes with one thread where this process uses two)."""
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_ingest_fans_out_on_a_local_dask_cluster(
    prefect_server: None, inbox: Any, environ_restored: None
) -> None:
    """Two Dask worker processes run the per-study tasks; the outputs are the same content
    addresses the default runner writes, and a second run over the cluster is all Cached."""
    import os

    from distributed import Client, LocalCluster, get_task_stream
    from prefect_dask.task_runners import DaskTaskRunner

    from flows.ingest import ingest

    folder, labels, studies = inbox
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        on_dask = ingest.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        with get_task_stream(client) as stream:
            state = on_dask(folder.as_uri(), "", str(labels), return_state=True)
        keys = state.result()
        ran_on = {item["worker"] for item in stream.data}
        pids = set(client.run(os.getpid).values())
        states = _task_states(state.state_details.flow_run_id, expected=12)
        again = on_dask(folder.as_uri(), "", str(labels), return_state=True)
        assert again.result() == keys
        rerun = _task_states(again.state_details.flow_run_id, expected=12)
    assert len(keys) == len(studies) == 3
    assert len(stream.data) >= 9 and ran_on  # the per-study tasks ran on the cluster
    assert len(pids) == 2 and os.getpid() not in pids
    assert {s for n, s in states.items() if n.startswith("features")} == {"Completed"}
    assert {s for n, s in rerun.items() if n.startswith(("anonymize", "features"))} == {"Cached"}
    # The same addresses as the thread runner: the runner changes where, not what.
    plain = ingest(folder.as_uri(), "", str(labels))
    assert plain == keys


def test_arrival_without_a_champion_waits_then_scores(
    prefect_server: None, inbox: Any, pipeline_env: Path, trained: TrainedLake
) -> None:
    """No champion: the triggered run fails with the reason and keeps the delivery pending
    (by hash); once a champion exists, `radflow score --pending` scores it and clears it."""
    from typer.testing import CliRunner

    from flows.arrival import score_arrival
    from radflow.arrival import arrival_id
    from radflow.cli import app
    from radflow.errors import NotFoundError
    from radflow.results import delivery_id
    from radflow.store import LocalStore

    folder, _, studies = inbox
    delivery = sorted(p.name for p in folder.iterdir())[0]
    arrival = arrival_id(LocalStore(folder).url, f"{delivery}/")
    with pytest.raises(NotFoundError, match="no champion model"):
        score_arrival(folder.as_uri(), arrival, "", 1)
    lake = pipeline_env / "lake"
    [pending] = list((lake / "pending").iterdir())
    assert pending.name == f"{arrival}.json" and delivery not in pending.read_text()

    trained.copy(pipeline_env)  # a champion, made by the stages, into this lake
    result = CliRunner().invoke(app, ["score", "--pending", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # `radflow results`' rows, of the studies just scored
    assert len(rows) == sum(s.files[0].is_relative_to(folder / delivery) for s in studies)
    assert all(Path(row["reports"]["html"]).is_file() for row in rows)
    assert {row["delivery"] for row in rows} == {delivery_id(folder.as_uri(), delivery)}
    assert not list((lake / "pending").iterdir())
