"""Noticing that a delivery has arrived: a folder of the inbox that has stopped changing.

A delivery is a folder `depth` levels under the watched prefix. It has arrived when it is
*stable*, as Orthanc judges a study: no new object for `stable_age` seconds, or a completion
marker object in it. Two sources of "something changed":

- `PollingWatcher` lists the inbox and remembers each folder's signature (its keys and ETags);
  for stores without notifications (a local folder, plain MinIO).
- `QueueWatcher` long-polls an SQS queue that S3 event notifications feed, and deletes a
  message only once the arrival it belongs to was emitted, so a crash loses nothing.

Folder names can hold PHI, so what leaves a watcher is an `Arrival`: a keyed hash of the
folder (`arrival_id`) and counts. The scoring flow finds the folder again by listing the inbox
(`locate`). Which arrivals were emitted is kept in the lake (`watch/<id>.json`), by hash.

Between the watcher's event and the report, an arrival is *pending* (`PendingArrival`,
`pending/<arrival>.json`): written before its event is sent and deleted once its scoring run
has finished every study. So no arrival is lost: if the event's run never starts (the server
refused to create it, a worker died with it), or failed, or waited for a champion, the record
is still there. The watcher announces records older than its `retry_after` again, the next
promotion announces them all, and `radflow score --pending` scores them by hand. Scoring is
idempotent, so announcing twice costs a Cached run, never a second report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from radflow.errors import NotFoundError
from radflow.keys import sha256_bytes
from radflow.lake import Lake
from radflow.lake.records import PendingArrival
from radflow.store import ObjectInfo, ObjectStore

MARKER = "_COMPLETE"
EVENT = "radflow.study.arrived"
ANNOUNCED = "announced"
NO_CHAMPION = "no champion model"


@dataclass(frozen=True)
class Arrival:
    """A stable delivery, named by a hash: safe for events, run names and logs."""

    arrival_id: str
    objects: int
    signature: str
    completed_by_marker: bool = False


def folder_of(key: str, prefix: str, depth: int = 1) -> str | None:
    """The delivery folder (`prefix` + `depth` segments + "/") of an object key; None for
    keys outside `prefix` or directly in it."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) <= depth or not all(parts[:depth]):
        return None
    return prefix + "/".join(parts[:depth]) + "/"


def arrival_id(source_url: str, folder: str) -> str:
    return sha256_bytes(f"{source_url}|{folder}".encode())[:24]


def _signature(objects: Iterable[ObjectInfo]) -> tuple[int, str, bool]:
    items = sorted((o.key, o.etag) for o in objects)
    marker = any(k.rsplit("/", 1)[-1] == MARKER for k, _ in items)
    return len(items), sha256_bytes(json.dumps(items).encode()), marker


def locate(store: ObjectStore, prefix: str, wanted: str, depth: int = 1) -> str:
    """The folder under `prefix` whose arrival id is `wanted`."""
    for folder in sorted(_folders(store.list(prefix), prefix, depth)):
        if arrival_id(store.url, folder) == wanted:
            return folder
    raise NotFoundError(f"no delivery {wanted} in the inbox", hint="was it moved or deleted?")


def _folders(objects: Iterable[ObjectInfo], prefix: str, depth: int) -> dict[str, list[ObjectInfo]]:
    found: dict[str, list[ObjectInfo]] = {}
    for o in objects:
        folder = folder_of(o.key, prefix, depth)
        if folder is not None:
            found.setdefault(folder, []).append(o)
    return found


class Emitted:
    """Which arrival (at which signature) was emitted, kept in the lake by hash only."""

    def __init__(self, lake: Lake, source_url: str, prefix: str) -> None:
        self.lake, self.source_url, self.prefix = lake, source_url, prefix
        self.seen = lake.emitted(source_url, prefix)

    def is_new(self, arrival: Arrival) -> bool:
        return self.seen.get(arrival.arrival_id) != arrival.signature

    def record(self, arrival: Arrival) -> None:
        self.seen[arrival.arrival_id] = arrival.signature
        self.lake.put_emitted(self.source_url, self.prefix, self.seen)


@dataclass
class _Activity:
    signature: str = ""
    changed_at: float = 0.0
    receipts: list[str] = field(default_factory=list)
    marker: bool = False


class PollingWatcher:
    """Lists the inbox on every `poll`; a folder whose signature has not changed for
    `stable_age` seconds (or that holds the marker) is an arrival, emitted once per signature.
    A restarted watcher waits `stable_age` again before emitting: it never emits early."""

    def __init__(
        self,
        inbox: ObjectStore,
        prefix: str,
        lake: Lake,
        stable_age: float = 30.0,
        depth: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inbox, self.prefix, self.depth = inbox, prefix, depth
        self.stable_age, self.clock = stable_age, clock
        self.emitted = Emitted(lake, inbox.url, prefix)
        self.activity: dict[str, _Activity] = {}

    def poll(self) -> list[Arrival]:
        """The arrivals ready now; call `done` for each once its event was emitted."""
        now, ready = self.clock(), []
        for folder, objects in sorted(
            _folders(self.inbox.list(self.prefix), self.prefix, self.depth).items()
        ):
            count, signature, marker = _signature(objects)
            seen = self.activity.setdefault(folder, _Activity())
            if seen.signature != signature:
                seen.signature, seen.changed_at = signature, now
            arrival = Arrival(arrival_id(self.inbox.url, folder), count, signature, marker)
            stable = marker or now - seen.changed_at >= self.stable_age
            if stable and self.emitted.is_new(arrival):
                ready.append(arrival)
        return ready

    def done(self, arrival: Arrival) -> None:
        self.emitted.record(arrival)


class QueueWatcher:
    """Reads S3 `ObjectCreated` notifications from SQS. A folder is an arrival once no message
    for it came for `stable_age` seconds (or its marker came); its messages are deleted in
    `done`, after the event went out. Messages for keys outside the prefix, and S3's test
    event, are deleted at once."""

    def __init__(
        self,
        inbox: ObjectStore,
        prefix: str,
        lake: Lake,
        sqs: Any,
        queue_url: str,
        stable_age: float = 30.0,
        depth: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inbox, self.prefix, self.depth = inbox, prefix, depth
        self.sqs, self.queue_url = sqs, queue_url
        self.stable_age, self.clock = stable_age, clock
        self.emitted = Emitted(lake, inbox.url, prefix)
        self.activity: dict[str, _Activity] = {}

    def poll(self, wait_seconds: int = 1) -> list[Arrival]:
        for receipt, keys in self._receive(wait_seconds):
            folders = {f for f in (folder_of(k, self.prefix, self.depth) for k in keys) if f}
            if not folders:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
            for folder in folders:
                seen = self.activity.setdefault(folder, _Activity())
                seen.changed_at = self.clock()
                seen.receipts.append(receipt)
                seen.marker |= any(k.rsplit("/", 1)[-1] == MARKER for k in keys)
        now, ready = self.clock(), []
        for folder, seen in sorted(self.activity.items()):
            if seen.marker or now - seen.changed_at >= self.stable_age:
                count, signature, marker = _signature(self.inbox.list(folder))
                arrival = Arrival(arrival_id(self.inbox.url, folder), count, signature, marker)
                if self.emitted.is_new(arrival):
                    ready.append(arrival)
                else:  # nothing new (a repeated notification): forget it
                    self._forget(folder)
        return ready

    def done(self, arrival: Arrival) -> None:
        self.emitted.record(arrival)
        for folder in [
            f for f in self.activity if arrival_id(self.inbox.url, f) == arrival.arrival_id
        ]:
            self._forget(folder)

    def _forget(self, folder: str) -> None:
        for receipt in self.activity.pop(folder).receipts:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)

    def _receive(self, wait_seconds: int) -> Iterator[tuple[str, list[str]]]:
        # Invisible for long enough that a message is not handed out again while its folder
        # settles; after a crash it comes back and the folder is judged again.
        visibility = int(self.stable_age * 4) + 30
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility,
        )
        for message in answer.get("Messages", []):
            body = json.loads(message["Body"])
            # S3 URL-encodes keys in notifications (spaces as "+").
            keys = [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", [])]
            # Bucket keys -> keys of the inbox store (which may be rooted under a prefix).
            root = getattr(self.inbox, "prefix", "")
            yield message["ReceiptHandle"], [k[len(root) :] for k in keys if k.startswith(root)]


def connect_bucket_to_queue(s3: Any, sqs: Any, bucket: str, prefix: str, queue: str) -> str:
    """Create the queue (if needed), let the bucket send to it, and notify it of every object
    created under `prefix`. Returns the queue's URL."""
    url: str = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ]
        },
    )
    return url


def mark_pending(lake: Lake, arrival: PendingArrival, reason: str, now: float) -> PendingArrival:
    """(Re)write the arrival's record; `announcements` counts how often its event was sent."""
    record = arrival.model_copy(
        update={
            "reason": reason,
            "since": now,
            "announcements": arrival.announcements + (reason == ANNOUNCED),
        }
    )
    lake.put_pending(record)
    return record


def overdue(lake: Lake, retry_after: float, now: float, most: int = 3) -> list[PendingArrival]:
    """Announced arrivals whose run has not finished `retry_after` seconds later, announced
    fewer than `most` times (one that keeps failing waits for `radflow score --pending`; those
    waiting for a champion are announced by the promotion)."""
    return [
        record
        for record in lake.pending_arrivals()
        if record.reason == ANNOUNCED
        and now - record.since >= retry_after
        and record.announcements < most
    ]
