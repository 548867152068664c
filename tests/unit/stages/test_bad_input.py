"""Bad input (issue 8): every bad file or study of a delivery gets exactly one quarantine
record with radflow's precise reason, the good studies are prepared, the flow completes, the
raw inbox is left byte- and mtime-identical, no record carries PHI, and memory stays bounded
although one file declares 34 GB of pixel data.

The corpus comes from `tests/support/badinput.py`; its table (input -> stage, reason) is the
specification the records are checked against, key by key.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from support.badinput import (
    ABSURD_COLUMNS,
    ABSURD_FRAMES,
    ABSURD_ROWS,
    assert_no_phi,
    corpus,
    expected_records,
    records,
    snapshot,
)

from radflow.config import DEFAULT_MAX_SERIES_VOXELS, load_settings
from radflow.dicom.batch import read_dicom
from radflow.errors import ConfigError, QuarantineError
from radflow.imaging.nifti import read_nifti
from radflow.imaging.read import plan_series, read_series
from radflow.lake import Lake, QuarantineRecord
from radflow.stages.anonymize import anonymize_study
from radflow.stages.fetch import delivery_fingerprint, fetch_delivery, read_header
from radflow.stages.preprocess import build_volume
from radflow.store import LocalStore, open_store
from radflow.synth import SynthSpec, synthesize

# --------------------------------------------------------------------------- the corpus


def test_the_corpus_is_what_it_claims(tmp_path: Path) -> None:
    folder, _, bad = corpus(tmp_path)
    by_name = {b.name: b for b in bad}
    assert by_name["empty.dcm"].files[0].stat().st_size == 0
    assert by_name["picture.dcm"].files[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    absurd = by_name["absurd.dcm"].files[0]
    ds = pydicom.dcmread(absurd, stop_before_pixels=True)
    declared = ds.Rows * ds.Columns * int(ds.NumberOfFrames) * ds.BitsAllocated // 8
    assert declared > 8 * 10**9 and absurd.stat().st_size < 16 * 1024
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (
        ABSURD_ROWS,
        ABSURD_COLUMNS,
        ABSURD_FRAMES,
    )
    assert len(bad) == 18 and len({b.name for b in bad}) == len(bad)
    again = corpus(tmp_path / "again")[0]
    assert {k: v[1] for k, v in snapshot(again).items()} == {
        k: v[1] for k, v in snapshot(folder).items()
    }  # deterministic: the same bytes on every run


def test_every_bad_input_gets_one_record_at_its_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages called as the tasks call them (no Prefect): the table, record by record."""
    folder, good, bad = corpus(tmp_path)
    monkeypatch.setenv("RADFLOW_SECRET", "stage-secret-" + "0123456789abcdef" * 2)
    settings = load_settings(store_url=(tmp_path / "lake").as_uri())
    lake = Lake(LocalStore(tmp_path / "lake"))
    before = snapshot(folder)
    fetched = fetch_delivery(open_store(folder.resolve().as_uri()), "", tmp_path / "cache")
    for rec in fetched.quarantined:
        lake.quarantine(rec)
    prepared = []
    for ref in fetched.studies:
        try:
            deid = anonymize_study(
                lake, tmp_path / "cache", ref, settings.deid_config(), tmp_path / "reid"
            )
        except QuarantineError as err:
            lake.quarantine(
                QuarantineRecord.for_key("", ref, "anonymize", err.reason, type(err).__name__)
            )
            continue
        try:
            prepared.append(build_volume(lake, deid, settings.preprocess))
        except QuarantineError as err:
            lake.quarantine(
                QuarantineRecord.for_key("", deid, "preprocess", err.reason, type(err).__name__)
            )
    assert len(prepared) == len(good)
    assert records(tmp_path / "lake") == expected_records(bad, folder, lake, settings)
    assert_no_phi(tmp_path / "lake", good)
    assert snapshot(folder) == before


# --------------------------------------------------------------------------- the guards


@pytest.mark.parametrize("name", ["absurd.dcm", "absurd-rle.dcm"])
def test_absurd_dimensions_are_refused_from_the_header_alone(tmp_path: Path, name: str) -> None:
    """Native (the pixel data are short) or RLE (nothing is short): the declared size alone."""
    _, _, bad = corpus(tmp_path)
    absurd = next(b for b in bad if b.name == name).files[0]
    assert absurd.stat().st_size < 16 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(QuarantineError) as caught:
            read_header(absurd, absurd.name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "declared pixel data too large"
    voxels = ABSURD_ROWS * ABSURD_COLUMNS * ABSURD_FRAMES
    assert caught.value.detail == (
        f"{voxels} voxels declared, the limit is {DEFAULT_MAX_SERIES_VOXELS} "
        "(RADFLOW_MAX_SERIES_VOXELS)"
    )
    assert peak < 2**20  # a header's worth, not a frame's

    # Reading the series refuses it too (a lower stage, were fetch's limit raised), before
    # the volume is allocated; the RLE file passes anonymize's truncation check.
    if name == "absurd-rle.dcm":
        assert read_dicom(absurd).Rows == ABSURD_ROWS
    tracemalloc.start()
    try:
        with pytest.raises(QuarantineError) as caught:
            read_series([absurd])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "declared pixel data too large"
    assert peak < 2**20


def test_the_series_limit_counts_every_file(tmp_path: Path) -> None:
    (study,) = synthesize(tmp_path / "inbox", tmp_path / "labels.csv", SynthSpec(studies=1))
    spec = SynthSpec()
    total = spec.rows * spec.columns * spec.slices
    assert plan_series(list(study.files), max_voxels=total).size == (
        spec.columns,
        spec.rows,
        spec.slices,
    )
    with pytest.raises(QuarantineError) as caught:
        plan_series(list(study.files), max_voxels=total - 1)
    assert caught.value.reason == "declared pixel data too large"
    assert caught.value.detail.startswith(f"{total} voxels declared, the limit is {total - 1}")


def test_fetch_takes_the_limit_from_its_caller(tmp_path: Path) -> None:
    synthesize(tmp_path / "inbox", tmp_path / "labels.csv", SynthSpec(studies=1, slices=8))
    source = LocalStore(tmp_path / "inbox")
    small = fetch_delivery(source, "", tmp_path / "cache", max_voxels=64 * 64 - 1)
    assert small.studies == []
    assert {r.reason for r in small.quarantined} == {"declared pixel data too large"}
    assert len(small.quarantined) == 8
    assert len(fetch_delivery(source, "", tmp_path / "cache").studies) == 1
    # The limit decides what fetch takes, so it is part of the delivery's fingerprint.
    assert delivery_fingerprint(source, "", tmp_path / "cache", 10) != delivery_fingerprint(
        source, "", tmp_path / "cache", 11
    )


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().max_series_voxels == DEFAULT_MAX_SERIES_VOXELS == 2**30
    monkeypatch.setenv("RADFLOW_MAX_SERIES_VOXELS", "1000")
    assert load_settings().max_series_voxels == 1000
    monkeypatch.setenv("RADFLOW_MAX_SERIES_VOXELS", "0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.setting == "RADFLOW_MAX_SERIES_VOXELS"


def test_a_nifti_header_declaring_too_many_voxels_is_refused_before_reading(
    tmp_path: Path,
) -> None:
    path = tmp_path / "huge.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4)), path)
    data = bytearray(path.read_bytes())
    data[40:56] = np.array([3, 2000, 2000, 2000, 1, 1, 1, 1], dtype="<i2").tobytes()
    path.write_bytes(bytes(data))  # 8e9 voxels declared, 128 bytes of them present
    tracemalloc.start()
    try:
        with pytest.raises(QuarantineError) as caught:
            read_nifti(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "declared pixel data too large"
    assert caught.value.detail.startswith("8000000000 voxels declared")
    assert peak < 2**20


def test_nifti_with_a_nan_or_singular_affine_is_refused_where_nifti_is_read(
    tmp_path: Path,
) -> None:
    """The inbox takes DICOM only (fetch records "NIfTI is not ingested"); NIfTI is read by
    `radflow register` and `radflow inspect`, through `read_nifti`."""
    _, _, bad = corpus(tmp_path)
    niftis = [b for b in bad if b.name.endswith((".nii", ".nii.gz"))]
    assert len(niftis) == 2
    for item in niftis:
        with pytest.raises(QuarantineError) as caught:
            read_nifti(item.files[0])
        assert caught.value.reason == "bad affine"
    details = {b.name: _refusal(read_nifti, b.files[0]).detail for b in niftis}
    assert details == {
        "nan-affine.nii": "the affine is not finite",
        "singular-affine.nii.gz": "the affine is singular",
    }


def _refusal(fn: object, *args: object) -> QuarantineError:
    try:
        fn(*args)  # type: ignore[operator]
    except QuarantineError as err:
        return err
    raise AssertionError("not refused")


def test_a_wrong_vr_is_named(tmp_path: Path) -> None:
    _, _, bad = corpus(tmp_path)
    files = next(b for b in bad if b.name == "wrong-vr-rows").files
    err = _refusal(plan_series, list(files))
    assert (err.reason, err.detail) == ("wrong VR", "Rows has VR LO, not US")


def test_a_file_cut_inside_an_element_header_is_truncated(tmp_path: Path) -> None:
    _, _, bad = corpus(tmp_path)
    by_name = {b.name: b.files[0] for b in bad}
    err = _refusal(read_dicom, by_name["cut-element-header.dcm"])
    assert (err.reason, err.detail) == (
        "truncated DICOM file",
        "the file ends inside an element's header",
    )
    err = _refusal(read_dicom, by_name["cut-value.dcm"])
    assert (err.reason, err.detail) == ("truncated DICOM file", "the file ends inside an element")
    err = _refusal(read_header, by_name["cut-header.dcm"], "cut-header.dcm")
    assert (err.reason, err.detail) == ("truncated DICOM file", "the file ends inside its header")


def test_a_second_file_of_one_instance_is_set_aside_not_written_over(tmp_path: Path) -> None:
    (study,) = synthesize(
        tmp_path / "inbox", tmp_path / "labels.csv", SynthSpec(studies=1, slices=8)
    )
    ds = pydicom.dcmread(study.files[0])
    ds.PixelData = bytes(len(ds.PixelData))  # other pixels under the same SOP Instance UID
    ds.save_as(study.files[0].with_name("copy.dcm"), enforce_file_format=True)
    (ref,) = fetch_delivery(LocalStore(tmp_path / "inbox"), "", tmp_path / "cache").studies
    lake = Lake(LocalStore(tmp_path / "lake"))
    config = load_settings(secret="dup-secret-" + "0123456789abcdef" * 2).deid_config()
    deid = anonymize_study(lake, tmp_path / "cache", ref, config, tmp_path / "reid")
    assert [s.instances for s in lake.manifest(deid).series] == [8]
    assert set(records(tmp_path / "lake").values()) == {"duplicate SOP instance"}
    assert len(records(tmp_path / "lake")) == 1
