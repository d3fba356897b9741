"""Request ids and the panel's answers when something fails on its side.

Every response carries ``X-Request-Id``. A failure of Helios or of a service it needs answers
with a short message and that id, in the page or in the API's error body; what went wrong in
detail (the traceback) goes only to the server's log, on a line that names the same id, so an
operator can find it from what a user reports.

- Redis not answering: reads go on (pages read the database); a change that needs the queue
  answers 503 at once (the client fails fast: connect timeout REDIS_CONNECT_TIMEOUT).
- The database locked past SQLite's wait, or not answering: 503, try again.
- Nomad not answering where a request asks it directly: 503.
- Anything else: 500.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import peewee as pw
import redis
from flask import (
    Flask,
    current_app,
    g,
    has_request_context,
    jsonify,
    make_response,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from panel.drivers.nomad import NomadError

__all__ = ["REQUEST_ID_HEADER", "current_request_id", "init_app"]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# What a trusted proxy may hand over as the id (anything else: Helios makes its own).
_FORWARDED_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")

UNAVAILABLE = {
    "queue": "The job queue (Redis) is not answering, so this change cannot be queued now; "
    "reading works. Try again in a minute; if it goes on, tell your operator.",
    "database_busy": "The database is busy with another change. Try again in a moment.",
    "database": "The database is not answering. Try again in a minute; if it goes on, tell "
    "your operator.",
    "cluster": "The cluster (Nomad) is not answering. Try again in a minute; if it goes on, "
    "tell your operator.",
}
INTERNAL = "Something went wrong on Helios's side; it was logged for the operator."


def current_request_id() -> str | None:
    """The id of the request being served (None outside a request)."""
    if not has_request_context():
        return None
    found = getattr(g, "request_id", None)
    if found is None:
        found = g.request_id = _new_id()
    return found


def _new_id() -> str:
    forwarded = request.headers.get(REQUEST_ID_HEADER, "")
    settings = current_app.extensions.get("helios.settings")
    if forwarded and settings and settings.trusted_proxies and _FORWARDED_ID.fullmatch(forwarded):
        return forwarded
    return secrets.token_hex(8)


def _install_record_factory() -> None:
    """Every log record made while serving a request carries its ``request_id`` (the JSON
    log format writes it), whatever handler the process configured, and whenever."""
    made = logging.getLogRecordFactory()
    if getattr(made, "helios_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = made(*args, **kwargs)
        record.request_id = current_request_id()
        return record

    factory.helios_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def init_app(app: Flask) -> None:
    """Ids on every request and response; the error handlers of the whole panel."""

    @app.before_request
    def _assign_id() -> None:
        current_request_id()

    @app.after_request
    def _answer_id(response):
        request_id = current_request_id()
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    _install_record_factory()
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_down)
    app.register_error_handler(pw.OperationalError, _database_error)
    app.register_error_handler(pw.InterfaceError, _database_error)
    app.register_error_handler(NomadError, _nomad_error)
    app.register_error_handler(Exception, _unexpected_error)


def wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.path.startswith("/api/") or best == "application/json"


def error_body(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The API's error shape, with the request's id."""
    return {"error": code, "message": message, **extra, "request_id": current_request_id()}


def _answer(status: int, code: str, message: str, title: str):
    if wants_json():
        response = jsonify(error_body(status, code, message))
    else:
        response = make_response(_page(status, title, message, current_request_id()))
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = "30"
    return response


def _http_error(exc: HTTPException):
    status = exc.code or 500
    if wants_json():
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error_body(status, code, exc.description or "")), status
    request_id = current_request_id() if status >= 500 else None
    return _page(status, exc.name, exc.description or "", request_id), status


def _page(status: int, title: str, message: str, request_id: str | None) -> str:
    """The error page, with the panel's menu when it can be drawn; else a plain one (the menu
    reads the signed-in person from the database, which may be what failed)."""
    context = {"code": status, "title": title, "message": message, "request_id": request_id}
    try:
        return render_template("error.html", **context)
    except Exception:  # the database, Redis, a template: whatever failed, say it plainly
        logger.warning("request %s: the full error page could not be drawn", request_id,
                       exc_info=True)  # fmt: skip
        # Straight from Jinja: Flask's context processors would load the signed-in person.
        plain = current_app.jinja_env.get_template("error_plain.html")
        return plain.render(**context, url_for=url_for)


def _redis_down(exc: redis.RedisError):
    logger.warning(
        "request %s: %s %s needs Redis, which is not answering: %s",
        current_request_id(), request.method, request.path, exc,
    )  # fmt: skip
    return _answer(503, "unavailable", UNAVAILABLE["queue"], "Queue unavailable")


def _database_error(exc: pw.PeeweeException):
    if "locked" in str(exc) or "busy" in str(exc):
        logger.warning(
            "request %s: %s %s: the database stayed locked: %s",
            current_request_id(), request.method, request.path, exc,
        )  # fmt: skip
        return _answer(503, "unavailable", UNAVAILABLE["database_busy"], "Database busy")
    logger.error(
        "request %s: %s %s: the database failed: %s",
        current_request_id(), request.method, request.path, exc, exc_info=exc,
    )  # fmt: skip
    return _answer(503, "unavailable", UNAVAILABLE["database"], "Database unavailable")


def _nomad_error(exc: NomadError):
    if not exc.retryable:
        return _unexpected_error(exc)
    logger.warning(
        "request %s: %s %s: Nomad did not answer: %s",
        current_request_id(), request.method, request.path, exc,
    )  # fmt: skip
    return _answer(503, "unavailable", UNAVAILABLE["cluster"], "Cluster unavailable")


def _unexpected_error(exc: Exception):
    # The operator gets the traceback in the log, under the id; the user gets the id only.
    logger.error(
        "request %s: unhandled error on %s %s",
        current_request_id(), request.method, request.path, exc_info=exc,
    )  # fmt: skip
    return _answer(500, "internal_error", INTERNAL, "Something went wrong")
