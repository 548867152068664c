"""Results keyed back: per scored study its pseudonym, score, call, model, ROI source and
report files, and, for a user who holds the re-identification map, the hospital's own
StudyInstanceUID.

The lake knows studies by pseudonym only (DESIGN.md 4). The original UID is looked up in the
map, on the machine that holds it, when the rows are made, and is never written back to the
lake, a log or Prefect. The map holds no accession number, so neither do the rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from radflow.errors import RadflowError
from radflow.keys import sha256_bytes
from radflow.lake import STUDY_HTML, Lake, ScoredStudy
from radflow.stages.report import PDF_DICOM, SEG_DICOM, SR_DICOM, STUDY_PDF, study_report_address

REPORT_FILES = {
    "html": STUDY_HTML,
    "pdf": STUDY_PDF,
    "sr": SR_DICOM,
    "seg": SEG_DICOM,
    "pdf_dicom": PDF_DICOM,
}
CSV_COLUMNS = (
    "study_id",
    "study_uid",
    "accession",
    "probability",
    "threshold",
    "call",
    "model_id",
    "roi_source",
    "delivery",
    "scored_at",
    *(f"report_{name}" for name in REPORT_FILES),
)


@dataclass(frozen=True)
class ResultRow:
    """One scored study. `study_uid` and `accession` are the original StudyInstanceUID and
    Accession Number (PHI): only set when the map was given, and only ever printed."""

    study_id: str
    probability: float
    threshold: float
    call: str  # "positive" or "negative" at the threshold
    model_id: str
    roi_source: str
    delivery: str
    scored_at: str
    reports: dict[str, str] = field(default_factory=dict)  # empty when no report was written
    study_uid: str | None = None
    accession: str | None = None

    def as_json(self) -> dict[str, object]:
        row = asdict(self)
        for key in ("study_uid", "accession"):
            if row[key] is None:
                del row[key]
        return row


def delivery_id(store_url: str, prefix: str = "") -> str:
    """A delivery's name in the lake: a hash of its location (a folder's name may hold PHI).

    The same for the two ways a folder is given (`inbox/` with prefix `new/`, or
    `inbox/new` itself), as the CLI and the flows do."""
    location = f"{store_url.rstrip('/')}/{prefix.strip('/')}".rstrip("/")
    return sha256_bytes(location.encode())[:16]


def utc_text(seconds: float) -> str:
    """A store's object time as the rows show it: UTC, ISO 8601, to the second."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_scored(lake: Lake, delivery: str, scores: Iterable[str | None]) -> int:
    """Point each scored study at its score (a study quarantined at scoring, None, has none);
    returns how many were recorded."""
    count = 0
    for key in scores:
        if key is None:
            continue
        score = lake.score(key)
        known = lake.scored(score.study_id)
        # The same result of the same delivery again (a cached rerun): the pointer stands, with
        # the time it was first written (its time in the store), and nothing is rewritten.
        if known is None or (known.score, known.features, known.delivery) != (
            key,
            score.features,
            delivery,
        ):
            lake.put_scored(
                ScoredStudy(
                    study_id=score.study_id,
                    score=key,
                    features=score.features,
                    delivery=delivery,
                )
            )
        count += 1
    return count


def parse_since(text: str) -> str:
    """`--since` as the lake's timestamps are written: a date (YYYY-MM-DD, from its start,
    UTC) or a date and time (UTC unless it says otherwise)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RadflowError(
            f"bad --since {text!r}", hint="give a date, 2026-12-01, or 2026-12-01T08:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_rows(
    lake: Lake,
    delivery: str | None = None,
    since: str | None = None,
    reid: Path | None = None,
    reports: Iterable[str] | None = None,
) -> list[ResultRow]:
    """Every scored study's latest result, of `delivery` and scored at or after `since`
    (both optional), oldest first; with `reid` (the map's folder, or a map file of
    `radflow anonymize`) the original StudyInstanceUID of each study the map knows.
    `reports`: only the studies of these report keys (what one scoring run returned)."""
    folders = None if reports is None else {key.rsplit("/", 1)[0] for key in reports}
    chosen = [
        (s, utc_text(when))
        for s, when in lake.scored_studies()
        if (delivery is None or s.delivery == delivery)
        and (since is None or utc_text(when) >= since)
        and (folders is None or study_report_address(s.score) in folders)
    ]
    originals = original_identifiers(reid, [s.study_id for s, _ in chosen]) if reid else {}
    rows = [_row(lake, s, at, originals.get(s.study_id)) for s, at in chosen]
    return sorted(rows, key=lambda r: (r.scored_at, r.study_id))


def _row(
    lake: Lake, scored: ScoredStudy, scored_at: str, original: tuple[str, str] | None
) -> ResultRow:
    score = lake.score(scored.score)
    folder = study_report_address(scored.score)
    reports = {}
    if lake.has(f"{folder}/{STUDY_HTML}"):  # written last: the set is complete
        reports = {name: lake.location(f"{folder}/{file}") for name, file in REPORT_FILES.items()}
    return ResultRow(
        study_id=score.study_id,
        probability=score.probability,
        threshold=score.threshold,
        call="positive" if score.positive else "negative",
        model_id=score.model_id,
        roi_source=score.roi_source,
        delivery=scored.delivery,
        scored_at=scored_at,
        reports=reports,
        study_uid=original[0] if original else None,
        accession=original[1] if original else None,
    )


def original_identifiers(reid: Path, study_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """study ID -> (original StudyInstanceUID, Accession Number; "" where the study had none or
    the map predates it), from the re-identification map: the folder that
    ingest and score write (`<study_id>.json` per study) or a JSON-lines map file of
    `radflow anonymize`. Studies the map does not hold are left out. Errors name the file's
    line, never its content (PHI)."""
    wanted = set(study_ids)
    if reid.is_dir():
        entries = [
            (path, 1, path.read_text(encoding="utf-8"))
            for study in sorted(wanted)
            if (path := reid / f"{study}.json").is_file()
        ]
    elif reid.is_file():
        lines = reid.read_text(encoding="utf-8").splitlines()
        entries = [(reid, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    else:
        raise RadflowError(
            "no re-identification map at the given path",
            hint="give the folder RADFLOW_DEID__REID_DIR names, or a map file of anonymize",
        )
    found: dict[str, tuple[str, str]] = {}
    for path, line, text in entries:
        try:
            entry = json.loads(text)
            study_id, study_uid = str(entry["study_id"]), str(entry["study_uid"])
            accession = str(entry.get("accession", ""))
        except (ValueError, KeyError, TypeError):
            raise RadflowError(
                f"re-identification map {path.name} line {line} is not a map entry",
                hint="give the map radflow wrote (JSON with study_id and study_uid)",
            ) from None
        if study_id in wanted:
            found[study_id] = (study_uid, accession)
    return found


def rows_csv(rows: Sequence[ResultRow]) -> str:
    """The rows as CSV, one column per report file; blank where a value is unknown."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in asdict(row).items() if k != "reports"}
        flat["study_uid"] = row.study_uid or ""
        flat["accession"] = row.accession or ""
        flat |= {f"report_{name}": row.reports.get(name, "") for name in REPORT_FILES}
        writer.writerow(flat)
    return out.getvalue()


def rows_text(rows: Sequence[ResultRow]) -> list[str]:
    """One line per study: who, the call and score, and the HTML report."""
    lines = []
    for row in rows:
        who = row.study_id
        if row.study_uid:
            accession = f", accession {row.accession}" if row.accession else ""
            who += f" ({row.study_uid}{accession})"
        report = row.reports.get("html", "no report")
        lines.append(
            f"{who}: {row.call} (probability {row.probability:.3f}, threshold"
            f" {row.threshold:.3f}, model {row.model_id}, ROI {row.roi_source or '-'}) {report}"
        )
    return lines
