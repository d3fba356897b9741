"""Live pages over Server-Sent Events: Redis pub/sub in, ``text/event-stream`` out.

Every live page uses one transport, :func:`live_stream`: it subscribes to Redis channels (a
provisioning run's own channel, or the events channel filtered down to what the page shows),
then sends the page's current state (a snapshot), then each change as it is published, until
the thing watched is over (an ``end`` event). Subscribing comes before the snapshot, so nothing
published between the two is lost; and since a stream always starts with the current state, a
browser whose EventSource reconnected by itself is right again at once.

Under gunicorn's gthread workers an open stream holds one of the process's threads. So that
streams can never starve ordinary requests (pages, the API, /healthz), one process serves at
most ``HELIOS_STREAM_MAX`` of them at once and refuses more with 503 and Retry-After; and each
stream closes after ``HELIOS_STREAM_LIFETIME`` seconds without an ``end`` event, so the
browser's EventSource reconnects by itself (with Last-Event-ID) and resumes, while the thread
goes back to serving others in between. When the process is asked to stop, open streams end
within a second, without ``end``, so browsers reconnect to another process or later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw
import redis
from flask import Flask, Response, current_app

from panel.db import database
from panel.models import Event

__all__ = [
    "BUSY_RETRY",
    "END",
    "HEARTBEAT",
    "RECONNECT_MS",
    "Frame",
    "StateFeed",
    "event_stream",
    "events_about",
    "init_app",
    "live_stream",
    "stop_streams",
    "streams_stopping",
]

logger = logging.getLogger(__name__)

HEARTBEAT = 15  # seconds between SSE comments that keep proxies from closing a quiet stream
RECONNECT_MS = 2000  # milliseconds the browser waits before it reconnects a closed stream
BUSY_RETRY = 15  # seconds a client refused for want of a free stream is told to wait
WAKE = 1.0  # seconds a stream waits on Redis at most before it checks its lifetime and stop
_SLOTS = "helios.stream_slots"
_stopping = threading.Event()


@dataclass(frozen=True)
class Frame:
    """One Server-Sent Event: its name, its JSON data and, optionally, its id."""

    event: str
    data: Any
    id: int | str | None = None

    @property
    def ends(self) -> bool:
        """True for the ``end`` event: the stream closes after it, for good."""
        return self.event == END.event

    def encode(self) -> str:
        """The event on the wire (``data`` is one line of JSON)."""
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.event}\ndata: {json.dumps(self.data)}\n\n"


END = Frame("end", {"kind": "end"})  # the last event: the browser closes its EventSource


def init_app(app: Flask) -> None:
    """Give ``app`` its per-process allowance of concurrent streams."""
    app.extensions[_SLOTS] = threading.BoundedSemaphore(
        app.extensions["helios.settings"].stream_max
    )


def stop_streams() -> None:
    """This process is stopping: open streams end now, so the requests in flight can drain."""
    _stopping.set()


def streams_stopping() -> bool:
    """True once this process was asked to stop."""
    return _stopping.is_set()


def events_about(subject_prefix: str | tuple[str, ...], **data: Any) -> Callable[[Any], bool]:
    """A filter for messages of the events channel (``panel.events.CHANNEL``): True for an
    event whose subject starts with ``subject_prefix`` (or one of several) and whose data has
    each of ``data``."""

    def accept(message: Any) -> bool:
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return False
        found = message["data"]
        return str(message.get("subject", "")).startswith(subject_prefix) and all(
            found.get(name) == value for name, value in data.items()
        )

    return accept


def live_stream(
    channels: Sequence[str],
    snapshot: Callable[[], Iterable[Frame]],
    render: Callable[[Any], Iterable[Frame]],
    *,
    accept: Callable[[Any], bool] | None = None,
) -> Response:
    """A live SSE response: ``snapshot()`` first, then ``render(message)`` of each message.

    ``channels`` are the Redis pub/sub channels to listen on, subscribed before ``snapshot``
    runs. A message is the JSON document published; it goes to ``render`` when ``accept`` (if
    given) says the page wants it; nothing looks at the database between messages (every
    change a page shows is published). Both return the frames to send; an :data:`END` frame
    ends the stream. Each runs in a database connection of its own (the request's is closed
    by then). The response is a 503 when this process
    already serves HELIOS_STREAM_MAX streams; a stream lasts HELIOS_STREAM_LIFETIME seconds
    at most, then closes without ``end`` and the browser reconnects.
    """
    frames = _frames(
        redis_conn=current_app.extensions["helios.redis"],
        channels=list(channels),
        snapshot=snapshot,
        render=render,
        accept=accept,
        lifetime=current_app.extensions["helios.settings"].stream_lifetime,
    )
    return event_stream(frames)


def event_stream(events: Iterator[str]) -> Response:
    """A text/event-stream response of ``events``; 503 when this process serves enough.

    The stream's slot is freed when the server closes the response and, should a client never
    close it (a test client, a response dropped unread), when its generator is finalized.
    """
    slots: threading.BoundedSemaphore = current_app.extensions[_SLOTS]
    if not slots.acquire(blocking=False):
        logger.warning("live stream refused: HELIOS_STREAM_MAX streams open in this process")
        return Response(
            "Too many live streams on this panel right now: the page tries again by itself.\n",
            status=503,
            mimetype="text/plain",
            headers={"Retry-After": str(BUSY_RETRY), "Cache-Control": "no-store"},
        )
    release = _release_once(slots)
    response = Response(
        _with_reconnect_time(events, release),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(release)  # the server closes every response it sent
    return response


def _with_reconnect_time(events: Iterator[str], release: Callable[[], None]) -> Iterator[str]:
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        yield from events  # closing this generator closes ``events`` too
    finally:
        release()


def _release_once(slots: threading.BoundedSemaphore) -> Callable[[], None]:
    lock = threading.Lock()
    released = False

    def release() -> None:
        nonlocal released
        with lock:
            if not released:
                released = True
                slots.release()

    return release


def _frames(
    *,
    redis_conn: redis.Redis,
    channels: list[str],
    snapshot: Callable[[], Iterable[Frame]],
    render: Callable[[Any], Iterable[Frame]],
    accept: Callable[[Any], bool] | None,
    lifetime: float,
) -> Iterator[str]:
    """The encoded events of one live stream; the pub/sub connection is closed whatever
    happens (the end, the lifetime, the process stopping, the client gone, an error)."""
    pubsub = redis_conn.pubsub(ignore_subscribe_messages=True)
    try:
        try:
            pubsub.subscribe(*channels)  # before the snapshot: nothing falls between the two
        except redis.RedisError as exc:
            # The stream closes at once: EventSource tries again after RECONNECT_MS.
            logger.warning("live stream not started: Redis is unreachable: %s", exc)
            yield ": live updates are unavailable right now\n\n"
            return
        start = time.monotonic()
        deadline, last_write = start + lifetime, start
        for frame in _call(snapshot):
            yield frame.encode()
            if frame.ends:
                return
        while not streams_stopping():
            now = time.monotonic()
            if now >= deadline:
                return  # without END: the browser reconnects and starts from a snapshot
            wait = min(WAKE, deadline - now)
            try:
                message = pubsub.get_message(timeout=max(wait, 0.0))
            except redis.RedisError as exc:
                logger.warning("live stream closed: Redis went away: %s", exc)
                return
            frames = _received(message, render, accept)
            for frame in frames:
                yield frame.encode()
                last_write = time.monotonic()
                if frame.ends:
                    return
            if time.monotonic() - last_write >= HEARTBEAT:
                # Also how a stream whose browser went away finds out: this write fails.
                yield ": keep-alive\n\n"
                last_write = time.monotonic()
    finally:
        pubsub.close()


def _call(function: Callable[..., Iterable[Frame]], *args: Any) -> list[Frame]:
    # The request's connection was closed when the view returned: each call opens its own, so
    # that no connection stays open across a write the client may never read.
    with database.connection_context():
        return list(function(*args))


def _received(
    message: dict[str, Any] | None,
    render: Callable[[Any], Iterable[Frame]],
    accept: Callable[[Any], bool] | None,
) -> list[Frame]:
    if message is None or message.get("type") not in {"message", "pmessage"}:
        return []
    try:
        document = json.loads(message["data"])
    except ValueError:
        logger.warning("live stream: not JSON on %r, ignored", message.get("channel"))
        return []
    if accept is not None and not accept(document):
        return []
    return _call(render, document)


class StateFeed:
    """What a live page's stream sends: the states ``_frames()`` finds changed since the last
    send, each frame's id the newest event they reflect (the events table's id), so a browser's
    Last-Event-ID says how recent its page is; a new stream starts from the state now."""

    cursor = 0

    def _frames(self) -> list[Frame]:
        raise NotImplementedError

    def snapshot(self) -> list[Frame]:
        """The state now (the stream is subscribed already: no later change is missed)."""
        self.cursor = Event.select(pw.fn.MAX(Event.id)).scalar() or 0
        return self._frames()

    def render(self, event: dict[str, Any]) -> list[Frame]:
        """An event the page follows was published: the states after it."""
        if isinstance(event.get("id"), int):
            self.cursor = max(self.cursor, event["id"])
        return self._frames()
