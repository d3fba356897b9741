"""Live Server-Sent Event streams: a few at a time per process, each open for a bounded time.

Under gunicorn's gthread workers an open stream holds one of the process's threads. So that
streams can never starve ordinary requests (pages, the API, /healthz), one process serves at
most ``HELIOS_STREAM_MAX`` of them at once and refuses more with 503 and Retry-After; and each
stream closes after ``HELIOS_STREAM_LIFETIME`` seconds without an ``end`` event, so the
browser's EventSource reconnects by itself with Last-Event-ID and resumes where it stopped,
while the thread goes back to serving others in between.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from flask import Flask, Response, current_app

__all__ = [
    "BUSY_RETRY",
    "HEARTBEAT",
    "RECONNECT_MS",
    "event_stream",
    "init_app",
    "stop_streams",
    "streams_stopping",
]

logger = logging.getLogger(__name__)

HEARTBEAT = 15  # seconds between SSE comments that keep proxies from closing a quiet stream
RECONNECT_MS = 2000  # milliseconds the browser waits before it reconnects a closed stream
BUSY_RETRY = 15  # seconds a client refused for want of a free stream is told to wait
_SLOTS = "helios.stream_slots"
_stopping = threading.Event()


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


def event_stream(events: Iterator[str]) -> Response:
    """A text/event-stream response of ``events``; 503 when this process serves enough."""
    slots: threading.BoundedSemaphore = current_app.extensions[_SLOTS]
    if not slots.acquire(blocking=False):
        logger.warning("live stream refused: HELIOS_STREAM_MAX streams open in this process")
        return Response(
            "Too many live streams on this panel right now: the page tries again by itself.\n",
            status=503,
            mimetype="text/plain",
            headers={"Retry-After": str(BUSY_RETRY), "Cache-Control": "no-store"},
        )
    response = Response(
        _with_reconnect_time(events),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(_release_once(slots))  # the server closes every response it sent
    return response


def _with_reconnect_time(events: Iterator[str]) -> Iterator[str]:
    yield f"retry: {RECONNECT_MS}\n\n"
    yield from events  # closing this generator closes ``events`` too


def _release_once(slots: threading.BoundedSemaphore):
    lock = threading.Lock()
    released = False

    def release() -> None:
        nonlocal released
        with lock:
            if not released:
                released = True
                slots.release()

    return release
