"""The worker's raw cache holds PHI (raw copies, original keys in the group index): after a
real fetch, from a local folder and from an S3 server, only its owner can read it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from support.annotations import CTSeries, write_ct_series

from radflow.annotations.masks_csv import MaskEntry
from radflow.imaging.read import read_series
from radflow.raw_cache import study_files
from radflow.stages.fetch import fetch_delivery
from radflow.store import ObjectStore

PHI_KEY = "DOE^JANE-MRN1234567"  # a folder name as deliveries have them: the index holds it


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    """The usual umask (022): files and folders would be world-readable unless made private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _delivery(tmp: Path, store: ObjectStore) -> tuple[CTSeries, Path]:
    """A 4-slice CT uploaded under `PHI_KEY/`, and a label map for it on local disk."""
    ct = write_ct_series(
        tmp / "series",
        rows=8,
        columns=8,
        pixel_spacing=(1.0, 1.0),
        positions=[(0.0, 0.0, 2.0 * k) for k in range(4)],
    )
    for path in ct.files:
        store.put_file(f"{PHI_KEY}/{path.name}", path)
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[1:3, 2:5, 2:5] = 1
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(read_series(list(ct.files)))
    mask = tmp / "mask.nii.gz"
    sitk.WriteImage(image, str(mask))
    return ct, mask


def _tree(cache: Path) -> tuple[dict[Path, int], dict[Path, int]]:
    folders = {cache: _mode(cache)}
    files = {}
    for root, dirs, names in os.walk(cache):
        for d in dirs:
            folders[Path(root) / d] = _mode(Path(root) / d)
        for n in names:
            files[Path(root) / n] = _mode(Path(root) / n)
    return folders, files


def test_a_fetch_leaves_every_cache_folder_700_and_every_file_600(
    tmp_path: Path, store: ObjectStore
) -> None:
    ct, mask = _delivery(tmp_path, store)
    cache = tmp_path / "cache"
    fetched = fetch_delivery(store, "", cache, masks=[MaskEntry(ct.study_uid, mask, "1")])
    assert fetched.quarantined == []
    (ref,) = fetched.studies

    folders, files = _tree(cache)
    # What the cache holds: 4 raw copies, 1 label map, 1 group index (no part files left).
    assert {p.relative_to(cache).parts[0] for p in files} == {"raw", "masks", "groups"}
    assert len(files) == 6
    assert {p.relative_to(cache) for p in folders} >= {
        Path("."),
        Path("raw"),
        Path("masks"),
        Path("groups"),
    }
    assert folders == dict.fromkeys(folders, 0o700)
    assert files == dict.fromkeys(files, 0o600)
    index = cache / "groups" / f"{ref}.json"
    assert PHI_KEY in index.read_text()  # why the index must be private too
    assert len(study_files(cache, ref)) == 4


def test_a_cache_made_loose_before_is_tightened_by_the_next_fetch(
    tmp_path: Path, store: ObjectStore
) -> None:
    _delivery(tmp_path, store)
    cache = tmp_path / "cache"
    (ref,) = fetch_delivery(store, "", cache).studies
    folders, files = _tree(cache)
    for path in files:  # as an earlier radflow left them
        path.chmod(0o644)
    for path in folders:
        path.chmod(0o755)

    assert fetch_delivery(store, "", cache).studies == [ref]  # the copies are reused
    folders, files = _tree(cache)
    inside = {p: m for p, m in folders.items() if p != cache}
    assert inside == dict.fromkeys(inside, 0o700)
    assert files == dict.fromkeys(files, 0o600)
    # The root existed: it may be a folder the user shares, so it is left as it was.
    assert folders[cache] == 0o755
