"""Live pages over Server-Sent Events: Redis pub/sub in, ``text/event-stream`` out.

Every live page uses one transport, :func:`live_stream`: it subscribes to Redis channels (a
provisioning run's own channel, or the events channel filtered down to what the page shows),
then sends the page's current state (a snapshot), then each change as it is published, until
the thing watched is over (an ``end`` event). Subscribing comes before the snapshot, so nothing
published between the two is lost; and since a stream always starts with the current state, a
browser whose EventSource reconnected by itself is right again at once.

The panel runs under gunicorn's gevent workers (``panel.run.web_server``): an open stream is a
greenlet waiting on a queue, so one process holds hundreds of them for little memory. Each
process listens to Redis over one pub/sub connection, its hub: the hub subscribes to the
channels its open streams follow and hands every message to each of them, in the order
published. So that streams never take every connection from ordinary requests (pages, the API,
/healthz), one process serves at most ``HELIOS_STREAM_MAX`` of them at once and refuses more
with 503 and Retry-After; and each stream closes after ``HELIOS_STREAM_LIFETIME`` seconds
without an ``end`` event, so the browser's EventSource reconnects by itself (with
Last-Event-ID) and resumes. A stream that falls too far behind, or whose messages Redis may
have dropped (Redis went away or reconnected), closes the same way. When the process is asked
to stop, open streams end at once, without ``end``, so browsers reconnect to another process or
later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
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

IDLE = 1.0  # seconds without a message after which a stream's ``idle`` is called
HEARTBEAT = 15  # seconds between SSE comments that keep proxies from closing a quiet stream
RECONNECT_MS = 2000  # milliseconds the browser waits before it reconnects a closed stream
BUSY_RETRY = 15  # seconds a client refused for want of a free stream is told to wait
HUB_POLL = 0.05  # seconds the hub waits on Redis at most before it (un)subscribes channels
SUBSCRIBE_TIMEOUT = 5.0  # seconds a new stream waits for Redis to confirm its channels
BACKLOG = 1000  # messages waiting for one stream at most; past that it closes and reconnects
_SLOTS = "helios.stream_slots"
_HUB = "helios.stream_hub"
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
    """This process is stopping: open streams end now, so the requests in flight can drain.

    Safe in a signal handler: it only sets a flag, which the hub acts on within HUB_POLL."""
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
    idle: Callable[[], Iterable[Frame]] | None = None,
) -> Response:
    """A live SSE response: ``snapshot()`` first, then ``render(message)`` of each message.

    ``channels`` are the Redis pub/sub channels to listen on, subscribed before ``snapshot``
    runs. A message is the JSON document published (the same document reaches every stream
    following its channel: neither ``accept`` nor ``render`` may change it); it goes to
    ``render`` when ``accept`` (if given) says the page wants it; nothing looks at the database
    between messages (every change a page shows is published). Both return the frames to send;
    an :data:`END` frame ends the stream. A query in either runs in a database connection of
    its own (the request's is closed by then), closed when it returns. The response is a 503
    when this process already serves HELIOS_STREAM_MAX streams; a stream lasts
    HELIOS_STREAM_LIFETIME seconds at most, then closes without ``end`` and the browser
    reconnects. ``idle`` (if given) is called after each IDLE seconds without a message, for
    a stream that ends at a time rather than on a message; it should not query every time.
    """
    frames = _frames(
        hub=_hub(),
        channels=list(channels),
        snapshot=snapshot,
        render=render,
        accept=accept,
        lifetime=current_app.extensions["helios.settings"].stream_lifetime,
        idle=idle,
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
    hub: _Hub,
    channels: list[str],
    snapshot: Callable[[], Iterable[Frame]],
    render: Callable[[Any], Iterable[Frame]],
    accept: Callable[[Any], bool] | None,
    lifetime: float,
    idle: Callable[[], Iterable[Frame]] | None = None,
) -> Iterator[str]:
    """The encoded events of one live stream; it leaves the hub whatever happens (the end, the
    lifetime, the process stopping, the client gone, Redis gone, an error)."""
    try:
        subscription = hub.join(channels)  # before the snapshot: nothing falls between the two
    except SubscriptionError as exc:
        # The stream closes at once: EventSource tries again after RECONNECT_MS.
        logger.warning("live stream not started: %s", exc)
        yield ": live updates are unavailable right now\n\n"
        return
    try:
        deadline = time.monotonic() + lifetime
        for frame in _call(snapshot):
            yield frame.encode()
            if frame.ends:
                return
        yield from _published(subscription, render, accept, deadline, idle)
    finally:
        hub.leave(subscription)


def _published(
    subscription: _Subscription,
    render: Callable[[Any], Iterable[Frame]],
    accept: Callable[[Any], bool] | None,
    deadline: float,
    idle: Callable[[], Iterable[Frame]] | None = None,
) -> Iterator[str]:
    """The events of what is published, until ``end``, the deadline, the process stopping or
    a message missed; a comment after HEARTBEAT seconds without a write."""
    last_write = time.monotonic()
    while not streams_stopping():
        now = time.monotonic()
        if now >= deadline:
            return  # without END: the browser reconnects and starts from a snapshot
        if now - last_write >= HEARTBEAT:
            # Also how a stream whose browser went away finds out: this write fails.
            yield ": keep-alive\n\n"
            last_write = now
        wait = min(deadline, last_write + HEARTBEAT) - now
        try:
            message = subscription.receive(min(wait, IDLE) if idle else wait)
        except SubscriptionError as exc:
            logger.info("live stream closed: %s", exc)
            return  # without END: the browser reconnects and starts from a snapshot
        quiet = message is None and idle is not None
        for frame in _call(idle) if quiet else _received(message, render, accept):
            yield frame.encode()
            last_write = time.monotonic()
            if frame.ends:
                return


def _call(function: Callable[..., Iterable[Frame]], *args: Any) -> list[Frame]:
    # The request's connection was closed when the view returned. A query connects by itself
    # (peewee's autoconnect; the connection is the greenlet's own) and is closed after the
    # call, so that no connection stays open across a write the client may never read; a
    # call that needs no query (a published row sent as it came) opens none.
    try:
        return list(function(*args))
    finally:
        if not database.is_closed():
            database.close()


def _received(
    message: Any,
    render: Callable[[Any], Iterable[Frame]],
    accept: Callable[[Any], bool] | None,
) -> list[Frame]:
    if message is None or (accept is not None and not accept(message)):
        return []
    return _call(render, message)


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


# ---------------------------------------------------------------------------------------------
# The hub: one Redis subscriber per process, fanning messages out to its streams
# ---------------------------------------------------------------------------------------------


class SubscriptionError(RuntimeError):
    """A stream cannot follow its channels (any more): the message says why; it closes and
    the browser reconnects, starting again from a snapshot."""


class _Subscription:
    """One stream's place in the hub: the documents published on its channels, in order."""

    def __init__(self, channels: Iterable[str]) -> None:
        self.channels = frozenset(channels)
        self.ready = threading.Event()  # Redis confirmed every channel: nothing is missed now
        self.lost: str | None = None  # why messages may be missing: the stream must end
        self._inbox: queue.Queue[Any] = queue.Queue(BACKLOG)

    def receive(self, timeout: float) -> Any:
        """The next document, or None after ``timeout`` seconds without one; SubscriptionError
        once a message may have been missed."""
        document = None
        if self.lost is None:
            with contextlib.suppress(queue.Empty):
                document = self._inbox.get(timeout=max(timeout, 0.0))
        if self.lost is not None:
            raise SubscriptionError(self.lost)
        return document

    def deliver(self, document: Any) -> None:
        """Queue ``document`` without waiting; a stream this far behind is dropped."""
        try:
            self._inbox.put_nowait(document)
        except queue.Full:
            self.drop(f"it fell {BACKLOG} messages behind")

    def drop(self, reason: str) -> None:
        """Messages may be missing from now on: the stream ends at its next look."""
        if self.lost is None:
            self.lost = reason
        self.ready.set()  # a stream still waiting to start learns it at once
        with contextlib.suppress(queue.Full):  # full: it has something to wake up to already
            self._inbox.put_nowait(None)


class _Hub:
    """This process's one Redis subscriber: it subscribes to the channels its open streams
    follow and hands each message, decoded once, to every one of them.

    Only its reader (a thread: a greenlet under gevent) touches the pub/sub connection; it runs
    while streams are open and stops when the last one left. It sends SUBSCRIBE for channels
    newly followed and UNSUBSCRIBE for channels no stream follows any more, one request per
    channel in flight at a time, so each confirmation Redis sends answers the latest request:
    a stream starts once each of its channels is confirmed.
    """

    def __init__(self, redis_conn: redis.Redis) -> None:
        self.redis = redis_conn
        self._lock = threading.Lock()
        self._followers: dict[str, set[_Subscription]] = {}
        self._live: set[str] = set()  # channels Redis confirmed, not unsubscribed since
        self._pending: set[str] = set()  # SUBSCRIBE sent, not confirmed yet
        self._reading = False

    def join(self, channels: Iterable[str]) -> _Subscription:
        """A subscription to ``channels``, once Redis confirmed each of them: every message
        published from now on reaches it. SubscriptionError when Redis does not confirm."""
        subscription = _Subscription(channels)
        with self._lock:
            for channel in subscription.channels:
                self._followers.setdefault(channel, set()).add(subscription)
            if subscription.channels <= self._live:
                subscription.ready.set()
            start_reader, self._reading = not self._reading, True
        if start_reader:
            threading.Thread(target=self._read, name="helios-stream-hub", daemon=True).start()
        if not subscription.ready.wait(SUBSCRIBE_TIMEOUT):
            subscription.drop(
                f"Redis is unreachable: no answer to SUBSCRIBE in {SUBSCRIBE_TIMEOUT:.0f} s"
            )
        if subscription.lost is not None:
            self.leave(subscription)
            raise SubscriptionError(subscription.lost)
        return subscription

    def leave(self, subscription: _Subscription) -> None:
        """The stream ended: its channels are unsubscribed once no other stream follows them."""
        with self._lock:
            for channel in subscription.channels:
                followers = self._followers.get(channel)
                if followers is not None:
                    followers.discard(subscription)
                    if not followers:
                        del self._followers[channel]

    def _read(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            while self._follow(pubsub):
                self._dispatch(pubsub.get_message(timeout=HUB_POLL))
        except redis.RedisError as exc:
            logger.warning("live streams closed: Redis is unreachable: %s", exc)
            self._stop(f"Redis is unreachable: {exc}")
        except Exception:
            logger.exception("live streams closed: the hub's reader failed")
            self._stop("the hub's reader failed")
        finally:
            pubsub.close()

    def _follow(self, pubsub: redis.client.PubSub) -> bool:
        """Subscribe to the channels followed and not yet subscribed, unsubscribe the others;
        False when the reader is to stop (no stream left, or the process is stopping)."""
        if streams_stopping():
            self._stop("the panel is stopping")
            return False
        with self._lock:
            if not self._followers:
                self._reading = False
                self._live.clear()
                self._pending.clear()
                return False
            new = set(self._followers) - self._live - self._pending
            old = self._live - set(self._followers)
            self._live -= old  # a stream following one of them again waits for a confirmation
            self._pending |= new
        if old:
            pubsub.unsubscribe(*old)
        if new:
            pubsub.subscribe(*new)
        return True

    def _dispatch(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        kind, channel = message["type"], message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind == "subscribe":
            self._confirmed(channel)
        elif kind == "message":
            try:
                document = json.loads(message["data"])
            except ValueError:
                logger.warning("live streams: not JSON on %r, ignored", channel)
                return
            with self._lock:
                followers = list(self._followers.get(channel, ()))
            for subscription in followers:
                subscription.deliver(document)

    def _confirmed(self, channel: str) -> None:
        with self._lock:
            if channel in self._pending:
                self._pending.discard(channel)
                self._live.add(channel)
                for subscription in self._followers.get(channel, ()):
                    if subscription.channels <= self._live:
                        subscription.ready.set()
                return
            # Not asked for: redis-py reconnected and subscribed again by itself. What was
            # published meanwhile is lost to the streams on it: they start again.
            self._live.add(channel)
            followers = list(self._followers.get(channel, ()))
        for subscription in followers:
            subscription.drop("Redis reconnected: messages may be missing")

    def _stop(self, reason: str) -> None:
        """The reader stops: every stream ends (or is refused) with ``reason``."""
        with self._lock:
            self._reading = False
            self._live.clear()
            self._pending.clear()
            followers = {s for members in self._followers.values() for s in members}
            self._followers.clear()
        for subscription in followers:
            subscription.drop(reason)


def _hub() -> _Hub:
    """This process's hub for the app's Redis (a test may swap the client for another)."""
    redis_conn = current_app.extensions["helios.redis"]
    hub = current_app.extensions.get(_HUB)
    if hub is None or hub.redis is not redis_conn:
        hub = current_app.extensions[_HUB] = _Hub(redis_conn)
    return hub
