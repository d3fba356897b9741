"""GET /v1/event/stream of the Nomad double: query checks and the chunked NDJSON writer.

https://developer.hashicorp.com/nomad/api-docs/events — the response is ndjson: one JSON
object per line, either a batch ``{"Index": N, "Events": [...]}`` or a heartbeat ``{}``.
Nomad sends a heartbeat as soon as the stream opens and then every 30 seconds
(``stream.NewJsonStream(ctx, 30*time.Second)`` in nomad/event_endpoint.go); the double's
interval is configurable. The endpoint is not in the OpenAPI description, so its query is
checked here; the messages for a bad ``index`` or ``topic`` are
command/agent/event_endpoint.go's.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from http.server import BaseHTTPRequestHandler

from .events import DROPPED, NAMESPACED_TOPICS, EventBroker, Subscription, parse_topics
from .state import ApiError

STREAM_PATH = "/v1/event/stream"
# index, topic and namespace are the endpoint's; region and stale are read for every request.
STREAM_PARAMS = {"index", "topic", "namespace", "region", "stale"}
HEARTBEAT = b"{}"


def stream_request(query: dict[str, list[str]]) -> tuple[list[str], int, dict[str, list[str]]]:
    """Check the query: (violations, start index, topics); ApiError carries Nomad's 400s."""
    violations = [
        f"unknown query parameter {name!r}" for name in sorted(set(query) - STREAM_PARAMS)
    ]
    raw = query.get("index", [""])[0] or "0"
    if not re.fullmatch(r"[+-]?\d+", raw):
        message = f'Unable to parse index: strconv.Atoi: parsing "{raw}": invalid syntax'
        raise ApiError(400, message)
    try:
        topics = parse_topics(query.get("topic", []))
    except ValueError as exc:
        raise ApiError(400, f"Invalid topic query: {exc}") from None
    return violations, max(int(raw), 0), topics


def allows(token_type: str, topics: dict[str, list[str]]) -> bool:
    """aclAllowsSubscription: namespaced topics need read-job, Node node:read, the rest
    (``*``, ACL topics, NodePool) a management token. Client tokens here hold the first two."""
    return token_type == "management" or set(topics) <= NAMESPACED_TOPICS | {"Node"}


def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    """Write one chunk of a chunked response."""
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _wait(subscription: Subscription, connection: socket.socket, timeout: float) -> bool:
    """Wait for a wake-up or the timeout; False when the client went away."""
    ready, _, _ = select.select([subscription.waker(), connection], [], [], max(timeout, 0.0))
    if connection in ready:
        try:
            if not connection.recv(4096):
                return False
        except OSError:
            return False
    if subscription.waker() in ready:
        subscription.drain()
    return True


def serve_stream(
    handler: BaseHTTPRequestHandler,
    broker: EventBroker,
    subscription: Subscription,
    heartbeat: float,
) -> None:
    """Write the stream of subscription until the client, a test control or stop() ends it."""
    connection: socket.socket = handler.connection  # type: ignore[attr-defined]
    subscription.connection = connection
    started, next_beat = False, 0.0
    try:
        while not (broker.stopped or subscription.closed):
            now = time.monotonic()
            if broker.stalled_until > now:
                if not _wait(subscription, connection, broker.stalled_until - now):
                    break
                next_beat = min(next_beat, time.monotonic())
                continue
            if not started:
                _start(handler)
                _chunk(handler, HEARTBEAT + b"\n")  # the first heartbeat says "connected"
                started, next_beat = True, now + heartbeat
            frames, dropped = broker.take(subscription)
            for frame in frames:
                _chunk(handler, json.dumps(frame, separators=(",", ":")).encode() + b"\n")
            if dropped:
                # The stream ends with the error text, as the agent writes it after the events.
                _chunk(handler, DROPPED.encode())
                handler.wfile.write(b"0\r\n\r\n")
                break
            if time.monotonic() >= next_beat:
                _chunk(handler, HEARTBEAT + b"\n")
                next_beat = time.monotonic() + heartbeat
            if not _wait(subscription, connection, next_beat - time.monotonic()):
                break
    except OSError:
        pass  # the client or drop_streams() closed the connection
    finally:
        broker.unsubscribe(subscription)
        handler.close_connection = True


def _start(handler: BaseHTTPRequestHandler) -> None:
    """Send the status line and headers of the stream (EventStream sets these two)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
