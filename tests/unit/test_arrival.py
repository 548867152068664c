"""Arrival of deliveries: stable folders become one arrival each, by polling a store and by S3
notifications through SQS (moto's server over HTTP); nothing PHI-bearing leaves a watcher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from radflow.arrival import (
    ANNOUNCED,
    MARKER,
    NO_CHAMPION,
    PollingWatcher,
    QueueWatcher,
    arrival_id,
    connect_bucket_to_queue,
    folder_of,
    locate,
    mark_pending,
    overdue,
)
from radflow.errors import NotFoundError
from radflow.lake import Lake, PendingArrival
from radflow.store import LocalStore, ObjectStore, S3Store

PHI_FOLDER = "DOE^JANE 1961-03-04/"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _put(store: ObjectStore, key: str, data: bytes = b"dicom") -> None:
    store.put_bytes(key, data)


@pytest.mark.parametrize(
    ("key", "depth", "folder"),
    [
        ("inbox/d1/a.dcm", 1, "inbox/d1/"),
        ("inbox/d1/s/a.dcm", 1, "inbox/d1/"),
        ("inbox/d1/s/a.dcm", 2, "inbox/d1/s/"),
        ("inbox/a.dcm", 1, None),  # directly in the inbox: no delivery folder
        ("other/d1/a.dcm", 1, None),
        ("inbox/d1/a.dcm", 2, None),
    ],
)
def test_folder_of(key: str, depth: int, folder: str | None) -> None:
    assert folder_of(key, "inbox/", depth) == folder


def test_polling_emits_a_stable_folder_once(tmp_path: Path) -> None:
    inbox, lake, clock = LocalStore(tmp_path / "in"), LocalStore(tmp_path / "lake"), Clock()
    watcher = PollingWatcher(inbox, "inbox/", Lake(lake), stable_age=30, clock=clock)
    _put(inbox, f"inbox/{PHI_FOLDER}1.dcm")
    assert watcher.poll() == []  # just seen: not stable yet
    clock.now += 10
    _put(inbox, f"inbox/{PHI_FOLDER}2.dcm")
    clock.now += 25
    assert watcher.poll() == []  # a change seen now (polling sees changes when it looks)
    clock.now += 29
    assert watcher.poll() == []
    clock.now += 1
    [arrival] = watcher.poll()
    assert arrival.objects == 2 and not arrival.completed_by_marker
    assert arrival.arrival_id == arrival_id(inbox.url, f"inbox/{PHI_FOLDER}")
    assert "DOE" not in json.dumps(arrival.__dict__)
    assert watcher.poll() == [arrival]  # not yet done: offered again
    watcher.done(arrival)
    clock.now += 100
    assert watcher.poll() == []
    assert locate(inbox, "inbox/", arrival.arrival_id) == f"inbox/{PHI_FOLDER}"
    # The lake keeps hashes only.
    [state] = list(lake.list("watch/"))
    assert "DOE" not in lake.get_text(state.key)

    # A restarted watcher remembers what it emitted; new content is a new arrival.
    again = PollingWatcher(inbox, "inbox/", Lake(lake), stable_age=30, clock=clock)
    assert again.poll() == []
    clock.now += 31
    assert again.poll() == []
    _put(inbox, f"inbox/{PHI_FOLDER}3.dcm")
    clock.now += 31
    assert again.poll() == []  # its first sight of the new signature
    clock.now += 31
    [bigger] = again.poll()
    assert bigger.arrival_id == arrival.arrival_id and bigger.objects == 3


def test_marker_completes_a_delivery_at_once(tmp_path: Path) -> None:
    inbox, lake, clock = LocalStore(tmp_path / "in"), LocalStore(tmp_path / "lake"), Clock()
    watcher = PollingWatcher(inbox, "", Lake(lake), stable_age=3600, clock=clock)
    _put(inbox, "d1/1.dcm")
    _put(inbox, "d2/1.dcm")
    _put(inbox, f"d2/{MARKER}", b"")
    [arrival] = watcher.poll()
    assert arrival.completed_by_marker and arrival.objects == 2
    assert locate(inbox, "", arrival.arrival_id) == "d2/"
    with pytest.raises(NotFoundError, match="no delivery"):
        locate(inbox, "", "0" * 24)


@pytest.fixture
def sqs(moto_server: str) -> Any:
    return boto3.session.Session().client("sqs", endpoint_url=moto_server, region_name="us-east-1")


def _queued(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def test_queue_watcher_deletes_messages_only_after_the_arrival_is_done(
    moto_server: str, s3_client: Any, s3_bucket: str, sqs: Any, tmp_path: Path
) -> None:
    url = connect_bucket_to_queue(s3_client, sqs, s3_bucket, "inbox/", f"q-{s3_bucket}")
    inbox = S3Store(s3_bucket, "", endpoint_url=moto_server, region="us-east-1")
    lake, clock = LocalStore(tmp_path / "lake"), Clock()
    watcher = QueueWatcher(inbox, "inbox/", Lake(lake), sqs, url, stable_age=5, clock=clock)
    for name in ("1.dcm", "2 b.dcm"):  # a space: S3 sends it URL-encoded
        s3_client.put_object(Bucket=s3_bucket, Key=f"inbox/{PHI_FOLDER}{name}", Body=b"x")
    s3_client.put_object(Bucket=s3_bucket, Key="elsewhere/x.dcm", Body=b"x")
    assert watcher.poll(wait_seconds=1) == []  # messages in, folder just active
    assert watcher.poll(wait_seconds=1) == []
    clock.now += 6
    [arrival] = watcher.poll(wait_seconds=0)
    assert arrival.objects == 2
    assert locate(inbox, "inbox/", arrival.arrival_id) == f"inbox/{PHI_FOLDER}"
    assert _queued(sqs, url) == 2  # the folder's messages wait (in flight) until done
    watcher.done(arrival)
    assert _queued(sqs, url) == 0

    # The same object written again: notified, but nothing new to emit.
    s3_client.put_object(Bucket=s3_bucket, Key=f"inbox/{PHI_FOLDER}1.dcm", Body=b"x")
    assert watcher.poll(wait_seconds=1) == []
    clock.now += 6
    assert watcher.poll(wait_seconds=0) == []
    assert _queued(sqs, url) == 0


def test_an_announced_arrival_stays_pending_until_done_and_is_retried_when_overdue(
    tmp_path: Path,
) -> None:
    """The safety net under events: a record before the event, retried while its run has not
    finished, at most 3 announcements; one waiting for a champion is left to the promotion."""
    lake = Lake(LocalStore(tmp_path / "lake"))
    arrival = PendingArrival(source="s3://inbox", prefix="in/", depth=1, arrival="a" * 24)
    mark_pending(lake, arrival, ANNOUNCED, now=100.0)
    assert overdue(lake, retry_after=600, now=699.0) == []
    [late] = overdue(lake, retry_after=600, now=700.0)
    assert late.arrival == "a" * 24 and late.announcements == 1
    mark_pending(lake, late, ANNOUNCED, now=700.0)  # announced again
    assert lake.pending("a" * 24).announcements == 2  # type: ignore[union-attr]
    assert overdue(lake, retry_after=600, now=1299.0) == []
    [again] = overdue(lake, retry_after=600, now=1300.0)
    mark_pending(lake, again, ANNOUNCED, now=1300.0)
    assert overdue(lake, retry_after=600, now=10_000.0) == []  # 3 times: left to a person
    assert len(lake.pending_arrivals()) == 1  # ... and still there for `radflow score --pending`

    other = arrival.model_copy(update={"arrival": "b" * 24})
    mark_pending(lake, other, NO_CHAMPION, now=100.0)
    assert [r.arrival for r in overdue(lake, 0, now=10_000.0)] == []
    assert {r.reason for r in lake.pending_arrivals()} == {ANNOUNCED, NO_CHAMPION}
    lake.clear_pending("a" * 24)
    lake.clear_pending("b" * 24)
    lake.clear_pending("b" * 24)  # twice is fine
    assert lake.pending_arrivals() == []


def test_a_record_deleted_while_the_watcher_reads_is_skipped(tmp_path: Path) -> None:
    """A scoring run clears its record between the watcher's listing and its read (the
    load bench hit this): the watcher carries on with the others."""

    class ClearedWhileListing(LocalStore):
        def get_bytes(self, key: str) -> bytes:
            if key.endswith("a" * 24 + ".json"):
                self.delete(key)
            return super().get_bytes(key)

    lake = Lake(ClearedWhileListing(tmp_path / "lake"))
    for name in ("a", "b"):
        arrival = PendingArrival(source="s3://in", prefix="", depth=1, arrival=name * 24)
        mark_pending(lake, arrival, ANNOUNCED, now=1.0)
    assert [r.arrival for r in lake.pending_arrivals()] == ["b" * 24]
