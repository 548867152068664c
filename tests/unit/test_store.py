"""The `ObjectStore` contract, run against a local folder and against S3 (moto over HTTP)."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radflow.config import Settings
from radflow.keys import sha256_bytes
from radflow.store import (
    LocalStore,
    ObjectInfo,
    ObjectStore,
    S3Store,
    open_store,
    validate_key,
    validate_prefix,
)

MiB = 1024 * 1024
TMP_DIR = ".radflow-tmp"


def keys_of(store: ObjectStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def files_under(folder: Path) -> list[Path]:
    """Every file (or symlink) below `folder`, hidden ones included."""
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def raw_keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------ bytes in, bytes out


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)), b"hello, lake\n", bytes(range(256)) * 4096],
    ids=["empty", "all-256-byte-values", "text", "1MiB-binary"],
)
def test_put_get_round_trips_exact_bytes(store: ObjectStore, data: bytes) -> None:
    store.put_bytes("scans/obj.bin", data)
    assert store.get_bytes("scans/obj.bin") == data
    (info,) = store.list()
    assert (info.key, info.size) == ("scans/obj.bin", len(data))
    assert isinstance(info, ObjectInfo)


def test_text_round_trips(store: ObjectStore) -> None:
    text = "Ünïcødé – 数据 ✓\n"
    store.put_text("notes/readme.txt", text)
    assert store.get_text("notes/readme.txt") == text
    assert store.get_bytes("notes/readme.txt") == text.encode()


def test_overwrite_replaces_the_whole_object(store: ObjectStore) -> None:
    store.put_bytes("k", b"a much longer first version")
    store.put_bytes("k", b"short")
    assert store.get_bytes("k") == b"short"
    assert [(i.key, i.size) for i in store.list()] == [("k", 5)]


def test_exists(store: ObjectStore) -> None:
    assert not store.exists("a/b")
    store.put_bytes("a/b", b"x")
    assert store.exists("a/b")
    assert not store.exists("a")  # a "folder" is not an object
    assert not store.exists("a/b/c")
    assert not store.exists("a/bb")


def test_delete(store: ObjectStore) -> None:
    store.put_bytes("a/b", b"x")
    store.put_bytes("a/c", b"y")
    store.delete("a/b")
    assert not store.exists("a/b")
    assert keys_of(store) == ["a/c"]
    with pytest.raises(FileNotFoundError):
        store.get_bytes("a/b")
    store.delete("a/b")  # deleting what is not there is not an error
    store.delete("never/was")
    assert keys_of(store) == ["a/c"]


def test_missing_key_raises_file_not_found(store: ObjectStore, tmp_path: Path) -> None:
    # Inbox keys carry folder names, which may be patients' names: the error names a hash.
    key = "DOE^JANE/no/such/key"
    hashed = f"no object at key sha256:{sha256_bytes(key.encode())[:12]}"
    with pytest.raises(FileNotFoundError, match=re.escape(hashed)) as err:
        store.get_bytes(key)
    assert "DOE" not in str(err.value)
    with pytest.raises(FileNotFoundError, match=re.escape(hashed)):
        store.get_text(key)
    dest = tmp_path / "downloads" / "out.bin"
    with pytest.raises(FileNotFoundError, match=re.escape(hashed)):
        store.download(key, dest)
    assert not dest.parent.exists()


# ------------------------------------------------------------------------------------ listing


def test_list_returns_keys_under_prefix_sorted_with_sizes(store: ObjectStore) -> None:
    written = {
        "b/2": b"22",
        "a/z": b"z" * 26,
        "a/b/c": b"",
        "a/a": b"a",
        "a-b": b"dash",  # '-' sorts before '/'
        "c": b"ccc",
        "a/b/a": b"aba",
    }
    for key, data in written.items():
        store.put_bytes(key, data)

    everything = list(store.list())
    assert [i.key for i in everything] == sorted(written)
    assert {i.key: i.size for i in everything} == {k: len(v) for k, v in written.items()}
    assert all(i.etag for i in everything)

    assert [(i.key, i.size) for i in store.list("a/")] == [
        ("a/a", 1),
        ("a/b/a", 3),
        ("a/b/c", 0),
        ("a/z", 26),
    ]
    assert keys_of(store, "a/b/") == ["a/b/a", "a/b/c"]
    assert keys_of(store, "b/") == ["b/2"]
    assert keys_of(store, "nothing/") == []


def test_list_prefix_matches_whole_folder_names(store: ObjectStore) -> None:
    for key in ("a/x", "ab/x", "a/bc", "a/b/c", "a/c"):
        store.put_bytes(key, b".")
    assert keys_of(store, "a/") == ["a/b/c", "a/bc", "a/c", "a/x"]
    # A prefix is a plain string prefix: it may end mid-name.
    assert keys_of(store, "a") == ["a/b/c", "a/bc", "a/c", "a/x", "ab/x"]
    assert keys_of(store, "a/b") == ["a/b/c", "a/bc"]
    assert keys_of(store, "ab/") == ["ab/x"]


def test_list_shows_exactly_the_written_keys(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"file contents")
    store.put_bytes("raw/1.dcm", b"one")
    store.put_bytes("raw/2.dcm", b"two")
    store.put_bytes("raw/2.dcm", b"two again")  # overwrite
    store.put_file("raw/3.dcm", src)
    store.put_text("meta/.hidden-but-real", "a dot-file key is an ordinary key")
    store.put_bytes("gone", b"x")
    store.delete("gone")
    store.download("raw/1.dcm", tmp_path / "dl" / "1.dcm")
    with pytest.raises(OSError):
        store.put_file("raw/4.dcm", tmp_path / "missing.bin")

    expected = ["meta/.hidden-but-real", "raw/1.dcm", "raw/2.dcm", "raw/3.dcm"]
    assert keys_of(store) == expected
    assert keys_of(store, "raw/") == expected[1:]


def test_list_rejects_bad_prefixes(store: ObjectStore) -> None:
    for prefix in ("/a", "../", "a/../", "a//b", f"{TMP_DIR}/", "a\\b", "a\nb"):
        with pytest.raises(ValueError):
            list(store.list(prefix))


def test_s3_list_follows_pagination(s3_store: S3Store) -> None:
    """ListObjectsV2 pages: ask the server for 4 keys a page so 25 keys take 7 requests."""
    n_keys = 25
    for i in range(n_keys):
        s3_store.put_bytes(f"many/{i:04d}", b"x" * (i % 3))

    pages: list[int] = []

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["MaxKeys"] = 4

    def count_page(parsed: dict[str, Any], **_: Any) -> None:
        pages.append(len(parsed.get("Contents", [])))

    events = s3_store.client.meta.events
    events.register("provide-client-params.s3.ListObjectsV2", small_pages)
    events.register("after-call.s3.ListObjectsV2", count_page)

    listed = list(s3_store.list("many/"))
    assert [i.key for i in listed] == [f"many/{i:04d}" for i in range(n_keys)]
    assert [i.size for i in listed] == [i % 3 for i in range(n_keys)]
    assert pages == [4, 4, 4, 4, 4, 4, 1]


# ------------------------------------------------------------------- files: upload, download

BIG_SIZE = 12 * MiB
MULTIPART_THRESHOLD = 5 * MiB


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "scan.nii.gz"
    path.write_bytes(os.urandom(BIG_SIZE))
    return path


@pytest.fixture
def multipart_s3_store(moto_server: str, s3_bucket: str) -> S3Store:
    """An `S3Store` that uploads and downloads anything over 5 MiB in parts."""
    return S3Store(
        s3_bucket,
        "lake",
        endpoint_url=moto_server,
        region="us-east-1",
        multipart_threshold=MULTIPART_THRESHOLD,
    )


@pytest.fixture(params=["local", "s3-multipart"])
def file_store(request: pytest.FixtureRequest) -> ObjectStore:
    fixture = {"local": "local_store", "s3-multipart": "multipart_s3_store"}[request.param]
    result: ObjectStore = request.getfixturevalue(fixture)
    return result


def test_put_file_and_download_large_file(
    file_store: ObjectStore, big_file: Path, tmp_path: Path
) -> None:
    file_store.put_file("big/scan.nii.gz", big_file)
    (info,) = file_store.list("big/")
    assert (info.key, info.size) == ("big/scan.nii.gz", BIG_SIZE)
    if isinstance(file_store, S3Store):
        # 12 MiB in 5 MiB parts: a multipart upload of 3 parts.
        assert info.etag.endswith("-3")

    dest = tmp_path / "out" / "nested" / "deeper" / "scan.nii.gz"
    file_store.download("big/scan.nii.gz", dest)
    assert sha256_file(dest) == sha256_file(big_file)
    assert list(dest.parent.iterdir()) == [dest]  # no .part file left behind


def test_download_creates_folders_and_replaces_existing_file(
    store: ObjectStore, tmp_path: Path
) -> None:
    store.put_bytes("x/y.bin", b"new contents")
    dest = tmp_path / "a" / "b" / "y.bin"
    store.download("x/y.bin", dest)
    assert dest.read_bytes() == b"new contents"

    dest.write_bytes(b"stale and much longer local contents")
    store.download("x/y.bin", dest)
    assert dest.read_bytes() == b"new contents"
    assert list(dest.parent.iterdir()) == [dest]


def test_failed_download_leaves_no_part_file(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("k", b"data")
    dest = tmp_path / "downloads" / "target"
    dest.mkdir(parents=True)  # a folder in the way: the final rename must fail
    (dest / "keep.txt").write_text("keep")
    with pytest.raises(OSError):
        store.download("k", dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["target"]
    assert (dest / "keep.txt").read_text() == "keep"


def test_put_file_round_trips_small_file(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "in" / "report.json"
    src.parent.mkdir()
    src.write_bytes(b'{"ok": true}')
    store.put_file("reports/r.json", src)
    assert store.get_bytes("reports/r.json") == b'{"ok": true}'
    assert src.read_bytes() == b'{"ok": true}'  # the source is untouched


# ---------------------------------------------------------------------------------- atomicity


def test_failed_put_file_leaves_nothing(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        store.put_file("k", tmp_path / "does-not-exist.bin")
    assert not store.exists("k")
    assert keys_of(store) == []
    with pytest.raises(FileNotFoundError):
        store.get_bytes("k")


def test_failed_put_file_keeps_previous_version(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("k", b"version 1")
    with pytest.raises(OSError):
        store.put_file("k", tmp_path / "does-not-exist.bin")
    assert store.get_bytes("k") == b"version 1"
    assert keys_of(store) == ["k"]


def test_local_failed_put_leaves_no_files_at_all(local_store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        local_store.put_file("a/k", tmp_path / "does-not-exist.bin")
    assert files_under(local_store.root) == []
    assert not (local_store.root / "a").exists()


def test_local_failed_commit_leaves_no_temporary_file(local_store: LocalStore) -> None:
    local_store.put_bytes("scan/slice", b"x")
    # "scan" is a folder, so an object cannot be renamed onto it.
    with pytest.raises(OSError):
        local_store.put_bytes("scan", b"y")
    assert files_under(local_store.root) == [local_store.root / "scan" / "slice"]
    assert keys_of(local_store) == ["scan/slice"]


def test_readers_see_only_complete_objects(store: ObjectStore) -> None:
    """While one thread overwrites an object, another never reads a partial or mixed one."""
    size = 256 * 1024
    versions = [bytes([i]) * size for i in range(8)]
    store.put_bytes("hot", versions[0])
    reading, stop = threading.Event(), threading.Event()
    seen: list[bytes] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                seen.append(store.get_bytes("hot"))
                reading.set()
        except BaseException as err:  # reported by the main thread
            errors.append(err)
            reading.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert reading.wait(timeout=10)
        for data in versions[1:] * 2:
            store.put_bytes("hot", data)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert seen
    assert all(data in versions for data in seen)
    assert store.get_bytes("hot") == versions[-1]


# ----------------------------------------------------------------------------- key validation

BAD_KEYS = [
    "",
    "/abs",
    "a/../b",
    "..",
    ".",
    "./a",
    "a/.",
    "a/..",
    "a//b",
    "a/",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "x" * 1100,
    "é" * 513,  # 1026 bytes in UTF-8, only 513 characters
    ".radflow-tmp/x",
    ".radflow-tmp",
]
BAD_KEY_IDS = [repr(k) if len(k) < 20 else f"{len(k.encode())}-bytes" for k in BAD_KEYS]


@pytest.mark.parametrize("key", BAD_KEYS, ids=BAD_KEY_IDS)
def test_validate_key_rejects(key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)


@pytest.fixture(scope="module")
def untouched_s3_store(moto_server: str, s3_client: Any) -> S3Store:
    """One S3Store shared by the bad-key tests (an S3Store takes ~0.25 s to build): as none
    of them may write anything, its bucket must stay empty throughout."""
    bucket = f"radflow-untouched-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    return S3Store(bucket, "lake", endpoint_url=moto_server, region="us-east-1")


@pytest.fixture(params=["local", "s3"])
def untouched_store(request: pytest.FixtureRequest) -> ObjectStore:
    fixture = {"local": "local_store", "s3": "untouched_s3_store"}[request.param]
    result: ObjectStore = request.getfixturevalue(fixture)
    return result


@pytest.mark.parametrize("key", BAD_KEYS, ids=BAD_KEY_IDS)
def test_every_store_method_rejects_bad_key_before_any_io(
    untouched_store: ObjectStore, key: str, tmp_path: Path, s3_client: Any
) -> None:
    store = untouched_store
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "downloads" / "out.bin"
    calls = {
        "put_bytes": lambda: store.put_bytes(key, b"payload"),
        "put_text": lambda: store.put_text(key, "payload"),
        "put_file": lambda: store.put_file(key, src),
        "get_bytes": lambda: store.get_bytes(key),
        "get_text": lambda: store.get_text(key),
        "download": lambda: store.download(key, dest),
        "exists": lambda: store.exists(key),
        "delete": lambda: store.delete(key),
        "local_path": lambda: store.local_path(key),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"{name} accepted {key!r}")

    assert keys_of(store) == []
    # Nothing written anywhere: not in the lake, not beside it, not at the destination.
    assert files_under(tmp_path) == [src]
    assert not dest.parent.exists()
    if isinstance(store, LocalStore):
        assert list(store.root.iterdir()) == []
    else:
        assert isinstance(store, S3Store)
        assert raw_keys(s3_client, store.bucket) == []


GOOD_KEYS = [
    "with space/file name.txt",
    "ünïcødé/数据/Ωmega.bin",
    "k=v/a+b.json",
    "date=2024-01-01/part+1=x.parquet",
    "100%/a%20b",
    "odd;chars/a?b#c&d,e@f!g~h'i(j)",
    ".dotfile",
    "a..b/c.d./...x",
    " leading and trailing space ",
    "-dash/_under",
]


def test_unusual_but_valid_keys_round_trip(store: ObjectStore) -> None:
    for key in GOOD_KEYS:
        assert validate_key(key) == key
        store.put_bytes(key, key.encode())
    for key in GOOD_KEYS:
        assert store.exists(key), key
        assert store.get_bytes(key) == key.encode(), key
    # Both kinds agree on the order: code points, which is UTF-8 byte order.
    assert keys_of(store) == sorted(GOOD_KEYS)
    assert keys_of(store) == sorted(GOOD_KEYS, key=str.encode)
    for key in GOOD_KEYS:
        store.delete(key)
    assert keys_of(store) == []


def long_key(n_bytes: int) -> str:
    """An n-byte key of 100-byte segments (a local file system allows 255 per name)."""
    segments, rest = divmod(n_bytes + 1, 101)
    parts = ["s" * 100] * segments + (["t" * (rest - 1)] if rest > 1 else [])
    key = "/".join(parts)
    assert len(key.encode()) == n_bytes, (n_bytes, len(key))
    return key


def test_local_store_accepts_keys_up_to_1024_bytes(local_store: LocalStore) -> None:
    key = long_key(1024)
    local_store.put_bytes(key, b"max")
    assert local_store.get_bytes(key) == b"max"
    with pytest.raises(ValueError):
        local_store.put_bytes(long_key(1025), b"too long")


def test_s3_key_limit_counts_the_store_prefix(s3_store: S3Store, s3_client: Any) -> None:
    # The store's prefix "lake/" takes 5 of S3's 1024 bytes.
    fits = long_key(1024 - len("lake/"))
    s3_store.put_bytes(fits, b"max")
    assert s3_store.get_bytes(fits) == b"max"
    assert raw_keys(s3_client, s3_store.bucket) == [f"lake/{fits}"]
    too_long = long_key(1024 - len("lake/") + 1)
    validate_key(too_long)  # fine on its own…
    with pytest.raises(ValueError):
        s3_store.put_bytes(too_long, b"x")  # …but not under the prefix
    assert raw_keys(s3_client, s3_store.bucket) == [f"lake/{fits}"]


def test_validate_prefix() -> None:
    for good in ("", "a", "a/", "a/b/", "a/b", "a b/"):
        assert validate_prefix(good) == good
    for bad in ("/", "/a", "../", "a/../", "a//b/", f"{TMP_DIR}/", "a\\b/"):
        with pytest.raises(ValueError):
            validate_prefix(bad)


def expected_valid(key: str) -> bool:
    """The rule `validate_key` implements, stated independently."""
    try:
        n_bytes = len(key.encode())
    except UnicodeEncodeError:  # a lone surrogate cannot be stored anywhere
        return False
    if not key or n_bytes > 1024:
        return False
    if "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        return False
    segments = key.split("/")  # a leading '/' or '//' or a trailing '/' gives an empty one
    if any(s in ("", ".", "..") for s in segments):
        return False
    return segments[0] != TMP_DIR


_SEGMENTS = st.sampled_from(
    ["", ".", "..", "...", "a", ".a", "a.", "..a", "b c", "é", "数据", TMP_DIR, "x=1+2", "%2e%2e"]
)
_TRICKY_CHARS = st.sampled_from([*"ab./\\ é数=+%-_~", "\x00", "\n", "\t", "\x1f", "\x7f"])
_KEYS = st.one_of(
    st.lists(_SEGMENTS, min_size=1, max_size=6).map("/".join),
    st.lists(_SEGMENTS, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)),
    st.text(_TRICKY_CHARS, max_size=20),
    st.text(max_size=20),
    st.text(st.characters(codec="utf-8", exclude_categories=[]), max_size=10),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "数", "a/"]), st.integers(250, 1100)),
    st.sampled_from(["\ud800", "a/\udfff"]),
)


@given(_KEYS)
def test_validate_key_accepts_exactly_the_safe_keys(key: str) -> None:
    if expected_valid(key):
        assert validate_key(key) == key
        # An accepted key never leads out of the folder it is joined to.
        joined = os.path.normpath(os.path.join("/lake", key))
        assert joined.startswith("/lake/")
        assert os.path.relpath(joined, "/lake").replace(os.sep, "/") == key
    else:
        with pytest.raises(ValueError):
            validate_key(key)


# ----------------------------------------------------------------------- LocalStore symlinks


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"do not touch")
    return folder


def test_a_folder_stores_objects_are_read_in_place_others_downloaded(store: ObjectStore) -> None:
    store.put_bytes("study/series/1.dcm", b"dicom bytes")
    path = store.local_path("study/series/1.dcm")
    if isinstance(store, LocalStore):
        assert path == store.root / "study" / "series" / "1.dcm"
        assert path.read_bytes() == b"dicom bytes"
        assert store.local_path("study/series/2.dcm") is None
        assert store.local_path("study/series") is None  # a folder is not an object
    else:
        assert path is None


def test_local_symlink_to_outside_file_is_refused(
    local_store: LocalStore, outside: Path, tmp_path: Path
) -> None:
    secret = outside / "secret.txt"
    (local_store.root / "leak").symlink_to(secret)
    dest = tmp_path / "dl" / "leak"
    for call in (
        lambda: local_store.get_bytes("leak"),
        lambda: local_store.get_text("leak"),
        lambda: local_store.exists("leak"),
        lambda: local_store.download("leak", dest),
        lambda: local_store.put_bytes("leak", b"overwritten"),
        lambda: local_store.put_file("leak", outside / "secret.txt"),
        lambda: local_store.delete("leak"),
        lambda: local_store.local_path("leak"),
    ):
        with pytest.raises(ValueError):
            call()
    assert secret.read_bytes() == b"do not touch"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not dest.parent.exists()
    assert keys_of(local_store) == []  # nor does listing reveal it


def test_local_symlink_to_outside_folder_is_refused(local_store: LocalStore, outside: Path) -> None:
    (local_store.root / "ext").symlink_to(outside, target_is_directory=True)
    for call in (
        lambda: local_store.get_bytes("ext/secret.txt"),
        lambda: local_store.exists("ext/secret.txt"),
        lambda: local_store.put_bytes("ext/secret.txt", b"overwritten"),
        lambda: local_store.put_bytes("ext/new.txt", b"planted"),
        lambda: local_store.put_bytes("ext/sub/new.txt", b"planted"),
        lambda: local_store.delete("ext/secret.txt"),
    ):
        with pytest.raises(ValueError):
            call()
    assert files_under(outside) == [outside / "secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"do not touch"
    assert keys_of(local_store) == []
    assert keys_of(local_store, "ext/") == []  # listing does not walk out either


def test_local_symlink_inside_root_is_allowed(local_store: LocalStore) -> None:
    local_store.put_bytes("real/x", b"inside")
    (local_store.root / "alias").symlink_to(local_store.root / "real")
    assert local_store.get_bytes("alias/x") == b"inside"


def test_local_store_creates_and_resolves_its_root(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / ".." / "lake"
    store = LocalStore(root)
    assert store.root == (tmp_path / "a" / "lake").resolve()
    assert store.root.is_dir()
    assert store.url == store.root.as_uri()


# --------------------------------------------------------------------------- S3Store prefixes


def test_s3_objects_land_under_the_prefix(s3_store: S3Store, s3_client: Any) -> None:
    s3_store.put_bytes("a/b.bin", b"1")
    s3_store.put_text("c.txt", "2")
    assert raw_keys(s3_client, s3_store.bucket) == ["lake/a/b.bin", "lake/c.txt"]
    assert keys_of(s3_store) == ["a/b.bin", "c.txt"]
    assert s3_store.url == f"s3://{s3_store.bucket}/lake/"


def test_s3_stores_with_different_prefixes_are_isolated(
    moto_server: str, s3_bucket: str, s3_client: Any
) -> None:
    def make(prefix: str) -> S3Store:
        return S3Store(s3_bucket, prefix, endpoint_url=moto_server, region="us-east-1")

    one, onex, whole = make("one"), make("/onex/"), make("")
    assert (one.prefix, onex.prefix, whole.prefix) == ("one/", "onex/", "")
    one.put_bytes("k", b"from one")
    onex.put_bytes("k", b"from onex")
    onex.put_bytes("only-x", b"x")

    assert keys_of(one) == ["k"]
    assert keys_of(onex) == ["k", "only-x"]
    assert one.get_bytes("k") == b"from one"
    assert not one.exists("only-x")
    one.delete("k")
    assert onex.get_bytes("k") == b"from onex"
    assert keys_of(whole) == ["onex/k", "onex/only-x"]
    assert raw_keys(s3_client, s3_bucket) == ["onex/k", "onex/only-x"]


@pytest.mark.parametrize("prefix", ["../x", "a//b", "a/./b", "a\\b", TMP_DIR])
def test_s3_store_rejects_bad_prefix(moto_server: str, prefix: str) -> None:
    with pytest.raises(ValueError):
        S3Store("bucket", prefix, endpoint_url=moto_server, region="us-east-1")


# --------------------------------------------------------------------------------- open_store


@pytest.fixture
def s3_settings(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.setenv("RADFLOW_CONFIG", str(tmp_path / "no-such-radflow.toml"))
    return Settings(s3_endpoint_url=moto_server, s3_region="us-east-1")


def test_open_store_file_url(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/lake")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "lake").resolve()
    store.put_bytes("k", b"v")
    assert (tmp_path / "lake" / "k").read_bytes() == b"v"


def test_open_store_bare_path(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "bare"))
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "bare").resolve()


def test_open_store_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("file://./rel/lake", "rel/lake"):
        store = open_store(url)
        assert isinstance(store, LocalStore)
        assert store.root == (tmp_path / "rel" / "lake").resolve()


def test_open_store_reopens_a_local_store_from_its_url(tmp_path: Path) -> None:
    original = LocalStore(tmp_path / "my lake ü")  # as_uri() percent-encodes this
    original.put_bytes("k", b"v")
    reopened = open_store(original.url)
    assert isinstance(reopened, LocalStore)
    assert reopened.root == original.root
    assert reopened.get_bytes("k") == b"v"
    localhost = open_store(original.url.replace("file://", "file://localhost", 1))
    assert isinstance(localhost, LocalStore)
    assert localhost.root == original.root


def test_open_store_s3_url(s3_settings: Settings, s3_bucket: str, s3_client: Any) -> None:
    store = open_store(f"s3://{s3_bucket}/pre/fix", s3_settings.s3_options())
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == (s3_bucket, "pre/fix/")
    assert store.url == f"s3://{s3_bucket}/pre/fix/"
    store.put_bytes("a/k", b"via open_store")
    assert store.get_bytes("a/k") == b"via open_store"
    assert raw_keys(s3_client, s3_bucket) == ["pre/fix/a/k"]

    bare = open_store(f"s3://{s3_bucket}", s3_settings.s3_options())
    assert isinstance(bare, S3Store)
    assert bare.prefix == ""
    assert keys_of(bare) == ["pre/fix/a/k"]


@pytest.mark.parametrize("url", ["ftp://x", "http://example.com/lake", "s3://", "s3:///pre"])
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


# ------------------------------------------------------------- unsafe keys from an S3 listing


def test_unsafe_keys_in_an_s3_inbox_are_quarantined_before_any_io(
    moto_server: str, s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """S3 takes any key, `..` included: the listing shows them as they are, every store call
    refuses them, and fetch sets each aside ("unsafe object key") while the rest goes on."""
    from radflow.lake.records import QuarantineRecord
    from radflow.stages.fetch import fetch_delivery

    unsafe = ["inbox/d/../../evil.dcm", "inbox/d/./x.dcm", "inbox/d//y.dcm", "inbox/d/a\\b.dcm"]
    for key in [*unsafe, "inbox/d/ok.dcm"]:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"not dicom")
    inbox = S3Store(s3_bucket, endpoint_url=moto_server, region="us-east-1")
    assert keys_of(inbox, "inbox/") == sorted([*unsafe, "inbox/d/ok.dcm"])
    for key in unsafe:
        with pytest.raises(ValueError):
            inbox.download(key, tmp_path / "dl" / "x")
        with pytest.raises(ValueError):
            inbox.get_bytes(key)

    result = fetch_delivery(inbox, "inbox/", tmp_path / "cache")
    by_hash = {r.source_hash: r.reason for r in result.quarantined}
    for key in unsafe:
        rec = QuarantineRecord.for_key(inbox.url, key, "fetch", "-")
        assert by_hash[rec.source_hash] == "unsafe object key"
    ok = QuarantineRecord.for_key(inbox.url, "inbox/d/ok.dcm", "fetch", "-")
    assert by_hash[ok.source_hash] == "not a DICOM instance"  # downloaded, read, refused
    assert len(files_under(tmp_path / "cache")) == 1  # only the safe key was downloaded
    assert files_under(tmp_path) == files_under(tmp_path / "cache")


def test_settings_reach_the_client(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from radflow.config import load_settings
    from radflow.store import open_store

    monkeypatch.setenv("RADFLOW_S3_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("RADFLOW_S3_CONNECT_TIMEOUT", "1.5")
    monkeypatch.setenv("RADFLOW_S3_READ_TIMEOUT", "7")
    store = open_store(
        "s3://some-bucket/lake", load_settings(s3_endpoint_url=moto_server).s3_options()
    )
    assert isinstance(store, S3Store)
    config = store.client.meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (1.5, 7.0)
    monkeypatch.setenv("RADFLOW_S3_MAX_ATTEMPTS", "0")
    with pytest.raises(Exception, match="RADFLOW_S3_MAX_ATTEMPTS"):
        load_settings()
