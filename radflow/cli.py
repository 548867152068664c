"""The `radflow` command: the outermost layer, above `flows/`.

It lives in the core package (the console script points here) but imports `flows` and
`flows.runtime` inside its commands, so nothing else in `radflow/` may import it.

Prefect is imported only inside the commands that run flows, after the environment
(PREFECT_HOME, privacy settings) is set: the core stays importable without it.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect as pyinspect
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from radflow.errors import NotFoundError, RadflowError

if TYPE_CHECKING:
    from radflow.console import ConsoleProgress
    from radflow.refusals import Refusal
    from radflow.results import ResultRow

app = typer.Typer(
    help="radflow: medical-imaging AI pipeline on Prefect 3.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

# Privacy and a closed network: no telemetry, and time for a first temporary server start.
_PREFECT_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # The temporary server logs a traceback when it stops while flushing its last event.
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    # Prefect's own notices ("Starting temporary server ... See https://docs.prefect.io/...")
    # are INFO on the `prefect` logger: warnings only there, while the flow and task run
    # loggers (its children, and the UI's logs) stay at INFO.
    "PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "INFO",
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "INFO",
}


DEMO_ROI_SOURCES = '["annotation", "model", "rule"]'


def _prefect_env(home: Path | None = None) -> None:
    for name, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if home is not None:
        os.environ.setdefault("PREFECT_HOME", str(home.resolve()))


def _fail(err: RadflowError) -> None:
    typer.secho(f"error: {err}", fg="red", err=True)
    if err.hint:
        typer.echo(f"hint: {err.hint}", err=True)
    raise typer.Exit(2)


def _run(fn: Callable[[], T], shown: ConsoleProgress | None = None) -> T:
    """Run a command body; user mistakes print one line and a hint, never a traceback. A run
    that failed after its deliveries were summed up (studies that failed unexpectedly) prints
    their summaries first: what was prepared, quarantined, and what broke."""
    interrupt = signal.getsignal(signal.SIGINT)  # a flow command takes Ctrl-C over for its run
    try:
        return fn()
    except RadflowError as err:
        for line in shown.summary_lines() if shown is not None else []:
            typer.echo(line, err=True)
        _fail(err)
        raise AssertionError("unreachable") from err
    except KeyboardInterrupt:  # before a flow runs; during one, flows.runtime.foreground
        _interrupted()
    finally:
        signal.signal(signal.SIGINT, interrupt)


def _interrupted() -> NoReturn:
    """Ctrl-C outside a flow run: the line and exit status a flow run's Ctrl-C gives.
    SystemExit, not typer.Exit, as it may be raised outside Typer too (`main`)."""
    from flows.runtime.foreground import EXIT_INTERRUPTED, INTERRUPTED

    typer.echo(INTERRUPTED, err=True)
    raise SystemExit(EXIT_INTERRUPTED) from None


def _start_flows() -> Callable[[], None]:
    """The temporary server boots while the preflight checks the inputs and the flows import
    (it took 0.5 s here to import and run the preflight, on the server's critical path: the
    server is what a flow command waits for); a refused command stops it as it exits. Ctrl-C
    ends the run at once from here on. Call the result when the flows are imported."""
    from flows.runtime import foreground

    server = foreground.start()
    return lambda: foreground.ready(server)


def _source(source: str) -> tuple[str, str]:
    """A folder or s3://bucket/prefix -> (store URL, listing prefix)."""
    from radflow.preflight import source_location

    return source_location(source)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=1, sort_keys=True, default=str))


def _studies(n: int) -> str:
    return f"{n} stud{'y' if n == 1 else 'ies'}"


def _decision(promoted: bool, reason: str) -> str:
    """The registry's reason reads as a refusal when it explains a first promotion."""
    if not promoted:
        return f"not promoted: {reason}"
    if reason == "no champion yet":
        return "promoted to champion (the first model)"
    return f"promoted to champion: {reason}"


def _end_with_summary(shown: ConsoleProgress, quiet: bool = False) -> None:
    """Each delivery's summary (on stderr with --json, whose stdout is for programs); exit 1
    when a delivery yielded no study."""
    for line in shown.summary_lines():
        typer.echo(line, err=quiet)
    if empty := shown.empty():
        first = empty[0]
        typer.secho(
            f"error: {'a delivery' if len(empty) > 1 else 'the delivery'} yielded no study",
            fg="red",
            err=True,
        )
        if first.summary.seen or first.summary.files_refused:
            hint = f"`radflow quarantine {first.location}` lists each refused input and why"
        else:
            hint = "it holds no file: check the folder or the s3:// prefix"
        typer.echo(f"hint: {hint}", err=True)
        raise typer.Exit(1)


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Folder for the inbox, lake, cache and secret.")
    ] = Path("radflow-demo"),
    studies: Annotated[
        int, typer.Option(min=10, help="Synthetic studies (a fifth are 'new').")
    ] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic studies.")] = 0,
) -> None:
    """Run the whole pipeline on synthetic studies: no server, bucket, GPU or network needed."""
    from radflow.console import ConsoleProgress
    from radflow.demo import DemoLayout, ensure_secret

    layout = DemoLayout(workdir.resolve())
    os.environ["RADFLOW_STORE_URL"] = layout.lake.as_uri()
    os.environ["RADFLOW_CACHE_DIR"] = str(layout.cache)
    os.environ["RADFLOW_SECRET_FILE"] = str(layout.secret_file)
    os.environ["RADFLOW_DEID__REID_DIR"] = str(layout.reid)
    os.environ.pop("RADFLOW_SECRET", None)
    # The demo knows its data: the threshold rule finds its synthetic lesions where a study
    # has no annotation (nowhere else is the rule a default).
    os.environ.setdefault("RADFLOW_PREPROCESS__ROI_SOURCES", DEMO_ROI_SOURCES)
    from radflow.config import load_settings

    _run(load_settings)  # the user's other settings, before anything is made
    layout.workdir.mkdir(parents=True, exist_ok=True)
    if ensure_secret(layout.secret_file):
        typer.echo(f"created a demo pseudonymisation secret at {layout.secret_file} (mode 600)")
    _prefect_env(layout.workdir / ".prefect")
    shown = ConsoleProgress()
    started = time.perf_counter()

    def body() -> dict[str, Any]:
        ready = _start_flows()
        from flows.demo import demo as demo_flow

        ready()
        with shown:
            result: dict[str, Any] = demo_flow(str(layout.workdir), studies, seed)
        return result

    result = _run(body, shown)
    elapsed = time.perf_counter() - started
    typer.echo("")
    typer.echo(f"radflow demo finished in {elapsed:.1f} s (workdir {layout.workdir})")
    typer.echo(
        f"model {result['model_id']}: test AUC {result['metrics']['auc']:.3f}; "
        + _decision(result["promoted"], result["reason"])
    )
    typer.echo(f"model report:   {layout.lake / result['report']}")
    sources = ", ".join(f"{source} {n}" for source, n in result["roi_sources"].items())
    prepared = sum(result["roi_sources"].values())
    rest = "; the others quarantined (see the delivery summaries below)"
    typer.echo(
        f"training:       {prepared} of {result['train_studies']} studies prepared, ROI from "
        f"{sources or 'nowhere'}{rest if prepared < result['train_studies'] else ''}"
    )
    if (seg := result.get("segmentation")) is not None and seg["model"] is None:
        typer.echo(f"segmentation:   {seg['reason']}")
    elif seg is not None:
        dice, roi = seg["metrics"]["dice"]["mean"], seg["classifier_on_model_rois"]
        typer.echo(
            f"segmentation:   model {seg['model_id']}: test Dice "
            + (f"{dice:.3f}" if dice is not None else "n/a")
            + (
                f", classifier AUC {roi['model_roi_auc']:.3f} with its ROIs"
                f" ({roi['annotation_auc']:.3f} with the annotations)"
                if roi and roi["model_roi_auc"] is not None and roi["annotation_auc"] is not None
                else ""
            )
            + f"; {_decision(seg['promoted'], seg['reason'])}"
        )
    new_sources = ", ".join(f"{s} {n}" for s, n in result.get("new_roi_sources", {}).items())
    typer.echo(
        f"study reports:  {len(result['study_reports'])} of {result['new_studies']} new studies"
        f" under {layout.lake / 'reports'}" + (f", ROI from {new_sources}" if new_sources else "")
    )
    for key in result["study_reports"][:3]:
        typer.echo(f"  {layout.lake / key}")
    typer.echo(
        f"results:        RADFLOW_STORE_URL={layout.lake.as_uri()} radflow results"
        f" --map {layout.reid}"
    )
    for line in shown.summary_lines():
        typer.echo(line)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the DICOM studies into.")],
    studies: Annotated[int, typer.Option(min=1, help="Studies to write.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same studies.")] = 0,
    size: Annotated[str, typer.Option(help="ROWSxCOLUMNSxSLICES, e.g. 512x512x100.")] = "64x64x48",
    realistic: Annotated[
        bool,
        typer.Option(
            help="Studies like real ones: a topogram in every study, a coronal reformat and a "
            "5 mm recon in half, a SEG or RTSTRUCT of the lesion in 4 of 5, a soft-tissue "
            "lesion in half. The options below change single parts of this mix."
        ),
    ] = False,
    localizers: Annotated[
        float | None, typer.Option(help="Share of studies with a 1-image topogram (LOCALIZER).")
    ] = None,
    reformats: Annotated[
        float | None, typer.Option(help="Share of studies with a coronal reformat (DERIVED).")
    ] = None,
    thick_recons: Annotated[
        float | None, typer.Option(help="Share of studies with a second axial series, 5 mm.")
    ] = None,
    annotations: Annotated[
        str | None,
        typer.Option(help="Annotation kinds to write, e.g. seg,rtstruct ('' for none)."),
    ] = None,
    annotated: Annotated[
        float | None, typer.Option(help="Share of studies annotated (default 1; 0.8 realistic).")
    ] = None,
    soft_tissue_lesions: Annotated[
        float | None,
        typer.Option(help="Share of studies whose lesion is 20-40 HU: no threshold rule finds it."),
    ] = None,
) -> None:
    """Write synthetic CT studies (with fake PHI) as DICOM, and OUT/labels.csv.

    Default: one axial series per study; one study in three has a second, moved one.
    The realism options add what real deliveries hold (topograms, coronal reformats,
    5 mm recons, a SEG or RTSTRUCT outlining the lesion, soft-tissue lesions) and
    OUT/truth.csv: per study the lesion's kind and exact voxel count, annotation, series.
    """
    from dataclasses import replace

    from radflow.synth import SynthSpec, synthesize
    from radflow.synth import realistic as realistic_mix

    def body() -> None:
        try:
            rows, cols, slices = (int(n) for n in size.lower().split("x"))
        except ValueError:
            raise RadflowError(f"bad --size {size!r}", hint="use ROWSxCOLUMNSxSLICES") from None
        spec = SynthSpec(studies=studies, rows=rows, columns=cols, slices=slices, seed=seed)
        spec = realistic_mix(spec) if realistic else spec
        finer: dict[str, Any] = {
            "localizers": localizers, "reformats": reformats, "thick_recons": thick_recons,
            "annotated": annotated, "soft_tissue_lesions": soft_tissue_lesions,
            "annotations": None if annotations is None
            else tuple(k.strip() for k in annotations.split(",") if k.strip()),
        }  # fmt: skip
        spec = replace(spec, **{k: v for k, v in finer.items() if v is not None})
        written = synthesize(out, out / "labels.csv", spec)
        typer.echo(f"wrote {_studies(len(written))} to {out} and labels to {out / 'labels.csv'}")

    _run(body)


@app.command()
def anonymize(
    src: Annotated[Path, typer.Argument(help="Folder of DICOM files (searched recursively).")],
    dst: Annotated[Path, typer.Argument(help="Output folder: <study>/<series>/<sop>.dcm.")],
    secret_file: Annotated[
        Path | None, typer.Option(help="Pseudonymisation secret (mode 600).")
    ] = None,
    map_file: Annotated[
        Path | None, typer.Option(help="Re-identification map (JSONL, mode 600), outside DST.")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(help="PS3.15 Annex E option, e.g. clean_descriptors.")
    ] = None,
    documents: Annotated[
        str | None,
        typer.Option(
            help="Encapsulated documents: quarantine (the default), or check-text: keep a PDF"
            " whose pages hold none of the header's patient identifiers, without its metadata."
        ),
    ] = None,
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = os.cpu_count() or 1,
) -> None:
    """De-identify every file under SRC into DST by the DICOM PS3.15 Annex E profile."""

    def body() -> str:
        from radflow.config import load_settings
        from radflow.dicom.batch import anonymize_tree, write_quarantine, write_reid_map
        from radflow.keys import sha256_bytes

        if not src.is_dir():
            raise NotFoundError(f"no folder at {src}", hint="give a folder of DICOM files")
        out = dst.resolve()
        if out == src.resolve() or src.resolve() in out.parents:
            raise RadflowError("DST must not be inside SRC", hint="choose another output folder")
        overrides: dict[str, Any] = {}
        if secret_file is not None:
            overrides["secret_file"] = secret_file
        if option:
            overrides["deid"] = {"options": tuple(option)}
        if documents is not None:
            if documents not in ("quarantine", "check-text"):
                raise RadflowError(
                    f"bad --documents {documents!r}", hint="quarantine or check-text"
                )
            overrides["deid"] = {
                **overrides.get("deid", {}),
                "documents": documents.replace("-", "_"),
            }
        settings = load_settings(**overrides)
        config = settings.deid_config()
        reid = (
            map_file or settings.deid.reid_dir / f"map-{sha256_bytes(str(out).encode())[:12]}.jsonl"
        )
        if out in reid.resolve().parents:
            raise RadflowError("the re-identification map must not be inside DST")
        out.mkdir(parents=True, exist_ok=True)
        summary = anonymize_tree(src, out, config, processes)
        write_quarantine(summary, out / "_quarantine.jsonl")
        write_reid_map(summary, reid, config.secret)
        return summary.line() + f"; map: {reid}"

    typer.echo(_run(body))


@app.command()
def inspect(
    path: Annotated[
        Path, typer.Argument(help="A DICOM series folder, a DICOM file or a NIfTI file.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Print an image's size, spacing, origin, direction (LPS) and modality.

    For a folder (a delivery), also each study's series kept or dropped by the series rules."""

    def body() -> dict[str, Any]:
        from radflow.config import load_settings
        from radflow.imaging.inspect import inspect_path

        if not path.exists():
            raise NotFoundError(f"nothing at {path}", hint="give a folder, a .dcm or a .nii(.gz)")
        return inspect_path(path, load_settings().preprocess.series)

    result = _run(body)
    if as_json:
        _print_json(result)
    else:
        from radflow.imaging.inspect import format_inspection

        typer.echo(format_inspection(result))


@app.command()
def register(
    fixed: Annotated[Path, typer.Argument(help="NIfTI file or DICOM series folder.")],
    moving: Annotated[Path, typer.Argument(help="NIfTI file or DICOM series folder.")],
    out_transform: Annotated[Path, typer.Option(help="ITK transform file (.tfm or .h5).")],
    out_image: Annotated[
        Path | None, typer.Option(help="MOVING resampled onto FIXED (.nii.gz).")
    ] = None,
    qc: Annotated[Path | None, typer.Option(help="Checkerboard PNG of the result.")] = None,
    kind: Annotated[str, typer.Option(help="rigid or affine.")] = "rigid",
) -> None:
    """Register MOVING onto FIXED (Mattes MI, 3 levels).

    The transform maps FIXED physical points to MOVING physical points (ITK's convention)."""

    def body() -> str:
        import SimpleITK as sitk

        from radflow.imaging.nifti import read_image
        from radflow.imaging.qc import checkerboard_png
        from radflow.imaging.register import register as run
        from radflow.imaging.register import resample_onto, write_transform

        if kind not in ("rigid", "affine"):
            raise RadflowError(f"bad --kind {kind!r}", hint="use rigid or affine")
        for path in (fixed, moving):
            if not path.exists():
                raise NotFoundError(f"nothing at {path}", hint="give a .nii(.gz) or a DICOM folder")
        fixed_image, moving_image = read_image(fixed), read_image(moving)
        result = run(fixed_image, moving_image, kind=kind)  # type: ignore[arg-type]
        write_transform(result, out_transform)
        if out_image is not None or qc is not None:
            moved = resample_onto(moving_image, fixed_image, result.transform)
            if out_image is not None:
                sitk.WriteImage(moved, str(out_image), useCompression=True)
            if qc is not None:
                qc.write_bytes(checkerboard_png(fixed_image, moved))
        return f"{kind} registration: metric {result.metric:.4f}, transform {out_transform}"

    typer.echo(_run(body))


@app.command()
def segment(
    image: Annotated[
        Path, typer.Argument(help="A NIfTI, NRRD or MHA file, or a DICOM series folder (CT).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The mask to write (.nii.gz).")],
    model: Annotated[
        str | None,
        typer.Option(help="A segmentation model's ID (seg-…); default: the champion."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Find the region of interest in one image with a registered segmentation model.

    The mask (uint8, 1 inside) is on the image's own grid; the largest plausible region is
    kept. Exits 2, writing nothing, when the model finds nothing (or nothing plausible)."""

    def body() -> dict[str, Any]:
        import SimpleITK as sitk

        from radflow.config import load_settings
        from radflow.imaging.nifti import read_image
        from radflow.lake import Lake
        from radflow.segmentation.infer import segment_image
        from radflow.stages.segmentation import require_segmentation
        from radflow.store import open_store

        if not image.exists():
            raise NotFoundError(f"nothing at {image}", hint="give a .nii(.gz) or a DICOM folder")
        if not out.name.endswith((".nii.gz", ".nii")):
            raise RadflowError(f"--out {out.name}: not a NIfTI name", hint="end it in .nii.gz")
        settings = load_settings()
        lake = Lake(open_store(settings.store_url, settings.s3_options()))
        address = require_segmentation(lake, model)
        card = lake.segmentation_card(address)
        found = segment_image(lake.segmentation_model(address), read_image(image))
        result = {
            "model": card.model_id,
            "test_dice": card.evaluation.dice.mean,
            "volume_ml": round(found.volume_ml, 3),
            "components": found.components,
            "problem": found.problem,
            "mask": str(out),
        }
        if found.problem is not None:
            return result
        out.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(found.mask, str(out), useCompression=True)
        return result

    result = _run(body)
    if as_json:
        _print_json(result)
    elif result["problem"] is None:
        typer.echo(
            f"{result['mask']}: {result['volume_ml']:.3f} ml found by model {result['model']}"
            f" (test Dice {result['test_dice']:.2f})"
        )
    if result["problem"] is not None:
        _fail(
            RadflowError(
                f"no region found by model {result['model']} ({result['problem']}, "
                f"{result['volume_ml']:.3f} ml)",
                hint="no mask written; check the image is a CT of the trained body part",
            )
        )


@app.command()
def ingest(
    source: Annotated[
        str, typer.Argument(metavar="DELIVERY", help="A folder, or s3://bucket/prefix.")
    ],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="CSV: study_uid,label (original StudyInstanceUIDs; label 0 or 1), checked"
            " whole before anything runs."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    masks: Annotated[
        Path | None,
        typer.Option(
            help="CSV: study_uid,path[,label] (original StudyInstanceUIDs): each study's SEG,"
            " RTSTRUCT or NIfTI/NRRD label map (paths relative to the CSV), checked before"
            " anything runs. It is de-identified into the study and is its region of interest,"
            " before any rule; label: the label map's value to keep (default: all)."
        ),
    ] = None,
    task_runner: Annotated[
        str, typer.Option(help="threads (in this process) or dask (prefect-dask).")
    ] = "threads",
    dask_address: Annotated[
        str | None, typer.Option(help="A Dask scheduler, tcp://host:8786; none: a local cluster.")
    ] = None,
) -> None:
    """Fetch, de-identify, register, preprocess and extract features of a delivery."""
    _prefect_env()
    from radflow.console import ConsoleProgress

    shown = ConsoleProgress()

    def body() -> list[str]:
        ready = _start_flows()
        from radflow.preflight import for_ingest

        url, prefix = for_ingest(source, labels, masks).source
        from flows.ingest import ingest as ingest_flow
        from flows.runtime.runners import task_runner as runner

        ready()
        flow = ingest_flow.with_options(task_runner=runner(task_runner, dask_address))
        with shown:
            keys: list[str] = flow(
                url,
                prefix,
                str(labels.resolve()) if labels else None,
                str(masks.resolve()) if masks else None,
            )
        return keys

    keys = _run(body, shown)
    if as_json:
        _print_json(keys)
    else:
        typer.echo(f"ingested {_studies(len(keys))}")
    _end_with_summary(shown, quiet=as_json)


@app.command()
def train(
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train on every labelled study in the lake; promote the model only if it is better."""
    _prefect_env()
    from radflow.console import ConsoleProgress

    shown = ConsoleProgress()

    def body() -> dict[str, Any]:
        ready = _start_flows()
        from radflow.preflight import for_train

        for_train()
        from flows.train import train_flow

        ready()
        with shown:
            result: dict[str, Any] = train_flow()
        return result

    result = _run(body)
    if as_json:
        _print_json(result)
        return
    m, lab = result["metrics"], result["labels"]
    typer.echo(
        f"model {result['model_id']}: test AUC {m['auc']:.3f} "
        f"(95% CI {m['auc_ci'][0]:.3f}-{m['auc_ci'][1]:.3f}); "
        f"{_decision(result['promoted'], result['reason'])}"
    )
    typer.echo(
        f"labels: {lab['labelled_studies']} studies labelled, {lab['unlabelled_studies']} "
        f"without a label, {lab['labels_without_study']} labels without a study"
    )
    if (seg := result.get("segmentation")) is not None and seg["model"] is None:
        typer.echo(f"segmentation model {seg['reason']}")
    elif seg is not None:
        dice = seg["metrics"]["dice"]
        roi = seg["classifier_on_model_rois"]
        line = f"segmentation model {seg['model_id']}: test Dice " + (
            f"{dice['mean']:.3f}" if dice["mean"] is not None else "n/a"
        )
        if roi is not None and roi["model_roi_auc"] is not None:
            line += f"; classifier AUC with its ROIs {roi['model_roi_auc']:.3f}"
        typer.echo(f"{line}; {_decision(seg['promoted'], seg['reason'])}")
    typer.echo(f"report: {result['report']}")


@app.command()
def score(
    source: Annotated[
        str | None, typer.Argument(metavar="DELIVERY", help="A folder, or s3://bucket/prefix.")
    ] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Score the deliveries that waited for a champion.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the scored studies' rows as JSON.")
    ] = False,
) -> None:
    """Score the studies of a delivery with the champion model and write their reports."""
    _prefect_env()
    from radflow.console import ConsoleProgress

    shown = ConsoleProgress()

    def body() -> list[str]:
        if source is not None and pending:
            raise RadflowError(
                "both a delivery and --pending were given", hint="give one of the two"
            )
        if source is None and not pending:
            raise RadflowError(
                "give a delivery to score, or --pending", hint="radflow score s3://bucket/inbox/x"
            )
        ready = _start_flows()
        from radflow.lake import Lake
        from radflow.preflight import for_score
        from radflow.store import open_store

        checked = for_score(source)
        url, prefix = checked.source
        lake = Lake(open_store(checked.settings.store_url, checked.settings.s3_options()))
        if pending:
            from flows.arrival import score_arrival

            ready()
            with shown:
                return [
                    key
                    for waiting in lake.pending_arrivals()
                    for key in score_arrival(
                        waiting.source, waiting.arrival, waiting.prefix, waiting.depth
                    )
                ]
        from flows.score import score_flow

        ready()
        with shown:
            reports: list[str] = score_flow(url, prefix)
        return reports

    reports = _run(body, shown)
    # The rows `radflow results` gives for the studies this run scored, pseudonymous only: an
    # unattended run's output lands in logs; `radflow results` adds the original UIDs.
    rows = _run(lambda: _results_rows(None, None, None, False, reports))
    if as_json:
        _print_json([row.as_json() for row in rows])
    else:
        from radflow.results import rows_text

        typer.echo(f"scored {_studies(len(reports))}")
        for key in reports:
            typer.echo(f"  {key}")
        for line in rows_text(rows):
            typer.echo(line)
    _end_with_summary(shown, quiet=as_json)


def _results_rows(
    delivery: tuple[str, str] | None,
    since: str | None,
    reid: Path | None,
    reidentify: bool = True,
    reports: list[str] | None = None,
) -> list[ResultRow]:
    """`radflow.results.result_rows` on the configured lake; with `reidentify`, the original
    UIDs from `reid`, else from the map folder ingest and score write, when it is there."""
    from radflow.config import load_settings
    from radflow.lake import Lake
    from radflow.results import delivery_id, result_rows
    from radflow.store import open_store

    settings = load_settings()
    lake = Lake(open_store(settings.store_url, settings.s3_options()))
    if reidentify and reid is None and settings.deid.reid_dir.is_dir():
        reid = settings.deid.reid_dir
    return result_rows(lake, delivery_id(*delivery) if delivery else None, since, reid, reports)


def _delivery_location(delivery: str) -> tuple[str, str]:
    """A delivery as `score` was given it, which need not exist any more: (store URL, prefix)."""
    if "://" in delivery:
        return _source(delivery)
    return Path(delivery).resolve().as_uri(), ""


@app.command()
def results(
    delivery: Annotated[
        str | None,
        typer.Argument(
            metavar="DELIVERY",
            help="A delivery as given to `radflow score` (a folder or s3://bucket/prefix);"
            " default: every scored study.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="DATE",
            help="Only studies scored at or after this UTC date or time (2026-12-01).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")] = False,
    map_path: Annotated[
        Path | None,
        typer.Option(
            "--map",
            help="Re-identification map: the folder ingest and score write (default: the"
            " RADFLOW_DEID__REID_DIR folder, when it exists) or a map file of `radflow"
            " anonymize`. With it, each row has the study's original StudyInstanceUID.",
        ),
    ] = None,
) -> None:
    """List the scored studies: pseudonym, probability, call, model and report files.

    Per scored study also the threshold and the ROI source and, with the re-identification
    map, the original StudyInstanceUID."""

    def body() -> list[ResultRow]:
        from radflow.results import parse_since

        if as_json and as_csv:
            raise RadflowError(
                "give --json or --csv, not both", hint="--json for programs, --csv for spreadsheets"
            )
        if map_path is not None and not map_path.exists():
            raise NotFoundError(
                "no re-identification map at the given path",
                hint="give the folder RADFLOW_DEID__REID_DIR names, or a map file of anonymize",
            )
        where = _delivery_location(delivery) if delivery else None
        rows = _results_rows(where, parse_since(since) if since else None, map_path)
        if delivery and not rows:
            raise NotFoundError(
                "no scored study of that delivery in the lake" + (" since then" if since else ""),
                hint="score it first: radflow score DELIVERY",
            )
        return rows

    rows = _run(body)
    if as_json:
        _print_json([row.as_json() for row in rows])
        return
    from radflow.results import rows_csv, rows_text

    if as_csv:
        typer.echo(rows_csv(rows), nl=False)
        return
    for line in rows_text(rows) or ["no scored studies yet"]:
        typer.echo(line)


@app.command()
def quarantine(
    delivery: Annotated[
        str | None,
        typer.Argument(
            metavar="DELIVERY",
            help="A delivery as given to ingest or score (a folder or s3://bucket/prefix): only"
            " its records, each with its file. Default: every record in the lake.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List the inputs set aside (quarantined) and why, with the file each one names.

    A record names its input by a hash only; the file or study folder is found by hashing
    what this machine holds (the delivery's files, the worker's raw cache) and is printed
    here, never stored."""

    def body() -> list[Refusal]:
        from radflow.config import load_settings
        from radflow.lake import Lake
        from radflow.refusals import refusals
        from radflow.store import open_store

        settings = load_settings()
        lake = Lake(open_store(settings.store_url, settings.s3_options()))
        if delivery is None:
            return refusals(lake, settings)
        url, prefix = _source(delivery)
        where = Path(delivery).resolve().as_posix() + "/" if "://" not in delivery else url + "/"
        inbox = open_store(url, settings.s3_options())
        return refusals(lake, settings, inbox, prefix, where)

    found = _run(body)
    if as_json:
        _print_json([r.as_json() for r in found])
        return
    if not found:
        typer.echo("nothing quarantined" + (" from this delivery" if delivery else ""))
        return
    for r in found:
        typer.echo(
            f"{r.record.stage}: {r.record.reason}"
            + (f" ({r.record.detail})" if r.record.detail else "")
        )
        typer.echo(f"  {r.location or 'input not found on this machine'}  [{r.record_key}]")


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="The pseudonymous study ID (as reports show it).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report files as JSON.")
    ] = False,
) -> None:
    """Rebuild a study's reports (HTML, PDF, DICOM SR, Encapsulated PDF) with the champion."""
    _prefect_env()

    def body() -> str | None:
        ready = _start_flows()
        from radflow.preflight import for_report

        for_report(study)
        from flows.report import report_flow

        ready()
        key: str | None = report_flow(study)
        return key

    key = _run(body)
    if key is None:
        _fail(RadflowError("the study was quarantined at scoring", hint="see quarantine/ records"))
    folder = str(key).rsplit("/", 1)[0]
    names = ("study.html", "study.pdf", "sr.dcm", "report-pdf.dcm", "seg.dcm")
    if as_json:
        _print_json({"study_id": study, "reports": [f"{folder}/{n}" for n in names]})
    else:
        for name in names:
            typer.echo(f"{folder}/{name}")


@app.command()
def serve(
    home: Annotated[
        Path, typer.Option(help="Folder for Prefect's database, logs and the PID record.")
    ] = Path(".radflow-serve"),
    port: Annotated[int, typer.Option(help="Loopback port of the server (0: a free one).")] = 4200,
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL instead of SQLite: postgresql+asyncpg://user:pw@host/db."),
    ] = None,
    gpus: Annotated[int, typer.Option(min=1, help="GPU-tagged tasks that may run at once.")] = 1,
) -> None:
    """Start a Prefect server on loopback with the deployments and a worker per pool.

    Also the cpu and gpu work pools, the GPU limit and the deployments of infra/prefect.yaml;
    `radflow stop` ends them all."""
    from radflow.config import load_settings

    _run(load_settings)  # the workers' settings: a mistake now, not in every run
    from flows.runtime import stack as runtime_stack

    stack = _run(lambda: runtime_stack.start(home, port or None, database_url, gpus))
    typer.echo(f"Prefect UI:  {stack.ui_url}")
    typer.echo(f"API:         {stack.api_url}  (export PREFECT_API_URL={stack.api_url})")
    typer.echo(f"logs:        {home.resolve() / 'logs'}")
    typer.echo(
        "stop with:   radflow stop" + (f" --home {home}" if str(home) != ".radflow-serve" else "")
    )


@app.command()
def stop(
    home: Annotated[Path, typer.Option(help="The folder given to `radflow serve`.")] = Path(
        ".radflow-serve"
    ),
) -> None:
    """End the server and workers that `radflow serve` started."""
    from flows.runtime import stack as runtime_stack

    stopped = runtime_stack.stop(home)
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def features(
    image: Annotated[
        Path, typer.Argument(help="NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or a DICOM folder.")
    ],
    mask: Annotated[
        Path,
        typer.Option(
            help="Label map on IMAGE's grid, in any of IMAGE's formats, or a DICOM SEG or"
            " RTSTRUCT file of IMAGE's series."
        ),
    ],
    label: Annotated[
        int | None,
        typer.Option(
            help="The label to describe (default: the only one); for a SEG or RTSTRUCT the"
            " segment number (SEG segment, RTSTRUCT ROI number)."
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object, feature -> value (NaN as null)."),
    ] = False,
) -> None:
    """Print the radiomics features of one region of an image.

    pyradiomics' names and defaults, with the feature stage's settings
    (RADFLOW_FEATURES__BIN_WIDTH)."""

    def body() -> tuple[dict[str, float], int, float]:
        import numpy as np
        import SimpleITK as sitk

        from radflow.config import load_settings
        from radflow.features.inputs import crop_to_mask, load_image, load_mask
        from radflow.features.radiomics import extract

        for what, path in (("IMAGE", image), ("MASK", mask)):
            if not path.exists():
                raise NotFoundError(
                    f"no {what} at {path}", hint="give a .nii(.gz), .nrrd/.nhdr or a DICOM folder"
                )
        params = load_settings().features
        pixels = load_image(image)
        region = load_mask(mask, pixels, label)
        voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(region)))
        pixels, region = crop_to_mask(pixels, region)
        return extract(pixels, region, bin_width=params.bin_width), voxels, params.bin_width

    values, voxels, bin_width = _run(body)
    if as_json:
        finite = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        typer.echo(json.dumps(finite, indent=1, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{voxels} voxels, bin width {bin_width:g}")
    order = ("firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
    classes: dict[str, list[tuple[str, float]]] = {family: [] for family in order}
    for name, value in values.items():
        _, family, feature = name.split("_", 2)
        classes.setdefault(family, []).append((feature, value))
    for family, rows in classes.items():
        if not rows:
            continue
        table = Table(title=family, title_justify="left", show_header=False)
        table.add_column("feature")
        table.add_column("value", justify="right")
        for feature, value in rows:
            table.add_row(feature, f"{value:.6g}")
        console.print(table)


def _reflowed(doc: str) -> str:
    """A docstring with each paragraph on one line: rich help keeps a docstring's line breaks
    after its first paragraph, which then break sentences wherever the source did."""
    paragraphs = pyinspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split("\n")) for p in paragraphs)


for _info in app.registered_commands:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _reflowed(_info.callback.__doc__)


class _ExitAfterHandlers:
    """The last exit handler: ends the process with the command's status, skipping the
    interpreter's teardown.

    Tearing down what a flow command imports (torch, SimpleITK, Prefect, matplotlib) took
    1.1-2.5 s after the command's work, against 0.1 s without it (a flow command on this
    2-core machine, alternating runs). It runs after the threads are joined and after every
    exit handler registered later than it (Prefect's, logging's flush, `weakref.finalize`'s,
    the temporary server's stop), so what is left is freeing memory, which the OS does."""

    def __init__(self) -> None:
        self.status = 1  # an exception that escapes `main` ends the process with 1

    def __call__(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing to flush to
                stream.flush()
        os._exit(self.status)


def _exit_status(code: object) -> int:
    """The status Python gives `SystemExit(code)`: None is 0, a message is 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def main() -> None:
    """The `radflow` console script. Ctrl-C can land before any command body runs (Typer
    builds the command line from the signatures for a few hundred milliseconds, longer on a
    busy machine): it ends the same way as one during a command, one line and 130."""
    exit_now = _ExitAfterHandlers()
    atexit.register(exit_now)  # registered first, so it runs last
    try:
        try:
            app()
        except KeyboardInterrupt:
            _interrupted()
    except SystemExit as ended:
        exit_now.status = _exit_status(ended.code)
        raise
    exit_now.status = 0


if __name__ == "__main__":  # pragma: no cover
    main()
