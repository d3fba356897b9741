"""/metrics for Prometheus, and the timing of every panel request.

/metrics serves every Helios process's metrics (see ``panel.metrics``). With
HELIOS_METRICS_TOKEN set it asks for ``Authorization: Bearer <token>`` (401 otherwise);
without one it answers only a direct request from a loopback address and 404 to anything
else, a request that came through a proxy (it carries X-Forwarded-For or Forwarded) included:
a proxy on the same machine would otherwise make every outside request look local.
"""

from __future__ import annotations

import hmac
import ipaddress
import time

from flask import Blueprint, Flask, Response, abort, current_app, g, request

from panel.metrics import (
    CONTENT_TYPE_LATEST,
    HTTP_IN_FLIGHT,
    HTTP_REQUEST_DURATION,
    HTTP_STREAMS_OPEN,
    render_metrics,
)

__all__ = ["bp", "init_app"]

bp = Blueprint("metrics", __name__)

_PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")
_UNROUTED = "unrouted"  # the endpoint label of a request no route matched (never its path)
# Label values come from this list only: a client may send any method name.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@bp.get("/metrics")
def metrics():
    """Every Helios process's metrics in Prometheus's text format."""
    settings = current_app.extensions["helios.settings"]
    if settings.metrics_token:
        if not _bearer_matches(settings.metrics_token):
            return Response(
                "Send Authorization: Bearer <HELIOS_METRICS_TOKEN>.\n",
                401,
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
                mimetype="text/plain",
            )
    elif not _direct_from_loopback():
        abort(404)
    body = render_metrics(current_app.extensions["helios.redis"], settings.queues)
    return Response(body, 200, {"Cache-Control": "no-store"}, content_type=CONTENT_TYPE_LATEST)


def _bearer_matches(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def _direct_from_loopback() -> bool:
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Timing every request
# ---------------------------------------------------------------------------------------------


def _start_timing() -> None:
    g.metrics_started = time.perf_counter()
    HTTP_IN_FLIGHT.inc()


def _record(response: Response) -> Response:
    started = g.get("metrics_started")
    if started is None:
        return response
    if response.mimetype == "text/event-stream":
        # A live stream lasts minutes: counted while open, never timed.
        HTTP_STREAMS_OPEN.inc()
        response.call_on_close(HTTP_STREAMS_OPEN.dec)
        return response
    HTTP_REQUEST_DURATION.labels(
        endpoint=request.endpoint or _UNROUTED,
        method=request.method if request.method in _METHODS else "other",
        status=str(response.status_code),
    ).observe(time.perf_counter() - started)
    return response


def _end_timing(_exc: BaseException | None) -> None:
    if g.pop("metrics_started", None) is not None:
        HTTP_IN_FLIGHT.dec()


def init_app(app: Flask) -> None:
    """Time every request; call first, so the timing covers the other hooks too."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timing)
    app.after_request(_record)
    app.teardown_request(_end_timing)
