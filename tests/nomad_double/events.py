"""Event stream of the Nomad double: events from writes, the ring buffer, subscriptions.

Docs and source followed (https://developer.hashicorp.com/nomad/api-docs/events):
- each write publishes one batch ``{"Index", "Events"}``; an event is ``Topic``, ``Type``
  (the write's message type), ``Key``, ``Namespace``, ``FilterKeys``, ``Index`` and
  ``Payload: {"<Topic>": object}`` (nomad/structs/event.go, nomad/state/events.go: allocations
  without their Job, FilterKeys [JobID, DeploymentID] for evaluations and allocations, [JobID]
  for deployments, none for jobs);
- the broker keeps the last ``event_buffer_size`` batches (agent option ``event_buffer_size``,
  default 100; nomad/stream/event_buffer.go keeps one more once it has overflowed);
- a subscriber asking for ``index`` starts at the batch with that index, else the next one;
  when that index is no longer buffered it starts at the oldest one still buffered, silently
  (StartAtClosest), and an index beyond the newest batch re-delivers the newest batch;
- a subscriber whose last delivered batch falls out of the buffer (it stopped reading) gets
  the error "event dropped from buffer" and its stream ends (bufferItem.Next); here readers
  keep up with every write unless ``stall_streams`` holds them, so only stalled ones fall out;
- topic filters ``Topic:Key``: the key matches ``Key`` or one of ``FilterKeys``, ``*`` matches
  all but only as a topic's only key (nomad/stream/subscription.go ``filter``); events with an
  empty Namespace pass any namespace filter, namespace ``*`` passes all.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from typing import Any

from .state import public

# table -> (Topic, FilterKeys fields)
TABLE_TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "jobs": ("Job", ()),
    "evals": ("Evaluation", ("JobID", "DeploymentID")),
    "allocs": ("Allocation", ("JobID", "DeploymentID")),
    "deployment": ("Deployment", ("JobID",)),
}
# Topics a non-management token may read (aclAllowsSubscription, nomad/stream/event_broker.go).
NAMESPACED_TOPICS = {"Deployment", "Evaluation", "Allocation", "Job", "Service"}
ALL = "*"
DROPPED = "event dropped from buffer"


def events_for(index: int, msg_type: str, changes: list[tuple[str, dict[str, Any]]]) -> list[dict]:
    """The events of one write, payloads snapshotted as JSON-ready dicts."""
    events = []
    for table, obj in changes:
        if table not in TABLE_TOPICS:
            continue
        topic, filter_fields = TABLE_TOPICS[table]
        payload = json.loads(json.dumps(public(obj)))
        payload.pop("Job", None)  # "remove job info to help keep size of alloc event down"
        events.append(
            {
                "Topic": topic,
                "Type": msg_type,
                "Key": obj["ID"],
                "Namespace": obj.get("Namespace", ""),
                "FilterKeys": [obj.get(f, "") for f in filter_fields] or None,
                "Index": index,
                "Payload": {topic: payload},
            }
        )
    return events


def parse_topics(values: list[str]) -> dict[str, list[str]]:
    """Parse ``topic`` query values like command/agent/event_endpoint.go parseEventTopics."""
    if not values:
        return {ALL: [ALL]}
    topics: dict[str, list[str]] = {}
    for value in values:
        parts = value.split(":")
        if len(parts) == 1:
            parts.append(ALL)  # "infer wildcard if only given a topic"
        elif len(parts) != 2:
            raise ValueError(
                "error parsing topics: Invalid key value pair for topic, topic: " + value
            )
        topics.setdefault(parts[0], []).append(parts[1])
    return topics


def matches(event: dict[str, Any], topics: dict[str, list[str]], namespace: str) -> bool:
    """Whether a subscription with these topics and namespace receives event."""
    if namespace != ALL and event["Namespace"] and event["Namespace"] != namespace:
        return False
    keys = list(topics.get(ALL, [])) + list(topics.get(event["Topic"], []))
    if keys == [ALL]:
        return True
    return any(event["Key"] == key or key in (event["FilterKeys"] or ()) for key in keys)


class Subscription:
    """One open stream: its filter, its place in the buffer, a wake-up socket pair."""

    def __init__(self, topics: dict[str, list[str]], namespace: str, start: int | None) -> None:
        """Start delivering at the batch with index start (None: the first batch appended)."""
        self.topics = topics
        self.namespace = namespace
        self.start = start
        self.current: int | None = None  # index of the last batch consumed
        self.frames: list[dict[str, Any]] = []  # consumed, matching, not yet written
        self.dropped = False
        self.closed = False
        self.connection: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)

    def consume(self, index: int, events: list[dict[str, Any]]) -> None:
        """Take one batch from the buffer, keeping the events that match."""
        self.current = index
        chosen = [e for e in events if matches(e, self.topics, self.namespace)]
        if chosen:
            self.frames.append({"Index": index, "Events": chosen})

    def wake(self) -> None:
        """Interrupt the stream's wait (new events, stall change, drop, stop)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def waker(self) -> socket.socket:
        """The socket that becomes readable on wake(); drain it with drain()."""
        return self._wake_r

    def drain(self) -> None:
        """Forget pending wake-ups."""
        try:
            while self._wake_r.recv(1024):
                pass
        except OSError:
            pass

    def close(self) -> None:
        """Release the wake-up sockets."""
        self._wake_r.close()
        self._wake_w.close()


class EventBroker:
    """The ring buffer of event batches and the open subscriptions."""

    def __init__(self, size: int = 100) -> None:
        """Keep up to size batches (Nomad's event_buffer_size; 0 means the default 100)."""
        self.size = size or 100
        self.lock = threading.Lock()
        # size + 1: once full, event_buffer.go has dropped its sentinel and holds size + 1.
        self.items: deque[tuple[int, list[dict[str, Any]]]] = deque(maxlen=self.size + 1)
        self.appended = 0
        self.subscriptions: set[Subscription] = set()
        self.opened = 0
        self.stalled_until = 0.0
        self.stopped = False

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, index: int, msg_type: str, changes: list[tuple[str, dict[str, Any]]]) -> None:
        """Append the events of one write (nothing when it has none, like EventBroker.Publish).

        Readers keep up with the buffer as Nomad's subscription goroutines do between raft
        applies, except while stalled: only a stalled reader can fall out of the buffer.
        """
        events = events_for(index, msg_type, changes)
        if not events:
            return
        with self.lock:
            self.items.append((index, events))
            self.appended += 1
            subscribers = list(self.subscriptions)
            if not self.stalled():
                for subscription in subscribers:
                    self._advance(subscription)
        for subscription in subscribers:
            subscription.wake()

    def stalled(self) -> bool:
        """Whether stall_streams is in effect."""
        return time.monotonic() < self.stalled_until

    def _advance(self, subscription: Subscription) -> None:
        """Consume the batches due to subscription; note when its place was evicted."""
        if subscription.dropped or not self.items:
            return
        oldest = self.items[0][0]
        if subscription.current is not None:
            evicted = subscription.current < oldest
            due = [item for item in self.items if item[0] > subscription.current]
        elif subscription.start is not None:
            evicted = subscription.start < oldest
            due = [item for item in self.items if item[0] >= subscription.start]
        else:  # started on an empty buffer: on its sentinel, dropped at the first overflow
            evicted = self.appended > self.size
            due = list(self.items)
        if evicted:
            subscription.dropped = True
            return
        for index, events in due:
            subscription.consume(index, events)

    # -- subscribing -----------------------------------------------------------------------------

    def subscribe(self, topics: dict[str, list[str]], namespace: str, index: int) -> Subscription:
        """Open a subscription starting at index (StartAtClosest; 0 = the whole buffer)."""
        with self.lock:
            indexes = [i for i, _ in self.items]
            if not indexes:
                start = None
            elif index == 0 or index <= indexes[0]:
                start = indexes[0]
            else:
                start = next((i for i in indexes if i >= index), indexes[-1])
            subscription = Subscription(topics, namespace, start)
            self.subscriptions.add(subscription)
            self.opened += 1
            if not self.stalled():
                self._advance(subscription)
            return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a finished subscription."""
        with self.lock:
            self.subscriptions.discard(subscription)
        subscription.close()

    def take(self, subscription: Subscription) -> tuple[list[dict[str, Any]], bool]:
        """Batches to write now and whether the subscription fell out of the buffer."""
        with self.lock:
            self._advance(subscription)
            frames, subscription.frames = subscription.frames, []
            return frames, subscription.dropped

    # -- test controls ---------------------------------------------------------------------------

    def stall(self, seconds: float) -> None:
        """Make every stream send nothing (heartbeats included) for seconds."""
        self.stalled_until = time.monotonic() + seconds
        self._wake_all()

    def drop(self) -> int:
        """Close every open stream connection abruptly; returns how many were open."""
        with self.lock:
            subscribers = list(self.subscriptions)
        for subscription in subscribers:
            subscription.closed = True
            if subscription.connection is not None:
                with contextlib.suppress(OSError):
                    subscription.connection.shutdown(socket.SHUT_RDWR)
            subscription.wake()
        return len(subscribers)

    def stop(self) -> None:
        """End every stream (the server is stopping)."""
        self.stopped = True
        self._wake_all()

    def _wake_all(self) -> None:
        """Wake every open stream."""
        with self.lock:
            subscribers = list(self.subscriptions)
        for subscription in subscribers:
            subscription.wake()

    @property
    def open_streams(self) -> int:
        """Number of streams currently open."""
        with self.lock:
            return len(self.subscriptions)
