"""The API's logs: an app's, one deployment's and one build's, as JSON or as a live stream.

Each route answers stored lines as JSON, ``{"lines": [...], "after": seq}``: the newest
``limit`` lines, or the first ``limit`` after ``?after=`` (send the answer's ``after`` back to
page on, or to poll). Asked with ``Accept: text/event-stream`` or ``?follow=true``, it streams
the same lines as Server-Sent Events instead, like the panel's log pages (``panel.web.logs``,
``panel.web.builds``): stored lines first, then each as it is stored, resumable with
Last-Event-ID; a deployment's or build's stream ends with ``end`` once its log is complete.

The routes belong to the API blueprint (bearer tokens, scopes, JSON errors): ``panel.web.api``
imports this module, which registers them on its ``bp``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee as pw
from flask import Response, jsonify, request

from panel.actions.logs import app_log_document
from panel.models import App, AppLog, Build, Deployment, LogChunk, TokenScope
from panel.web.api import _app, bp
from panel.web.api_io import (
    AppLogOut,
    AppLogQuery,
    BuildLogOut,
    LogQuery,
    fail,
    read_query,
)
from panel.web.builds import build_log_response
from panel.web.logs import AppLogFeed, SeqFeed, log_response, parse_since
from panel.web.openapi import JSON, operation
from panel.web.paths import parse_row_id
from panel.web.streams import Frame

__all__ = ["SSE", "app_log", "build_log", "deployment_log"]

SSE = "text/event-stream"
_EVENTS = (
    "Server-Sent Events: `log` events (`id`: the line's seq; `data`: the line as in the JSON "
    "answer), stored lines first, then each as it is stored; {ending}. Reconnect with the "
    "header Last-Event-ID to resume exactly after the last event received."
)
APP_EVENTS = _EVENTS.format(ending="the stream stays open (it closes now and then: reconnect)")
RUN_EVENTS = _EVENTS.format(ending="then `end` once the log is complete")


def _stream_doc(description: str) -> tuple[str, dict[str, Any]]:
    return SSE, {"type": "string", "description": description}


# ---------------------------------------------------------------------------------------------
# The two forms
# ---------------------------------------------------------------------------------------------


def _wants_stream(query: LogQuery) -> bool:
    """``follow`` when given, else whether Accept asks for text/event-stream over JSON."""
    if query.follow is not None:
        return query.follow
    accepted = request.accept_mimetypes
    return SSE in accepted.values() and accepted.best_match([SSE, JSON]) == SSE


def _stream_start(query: LogQuery, newest: pw.SelectQuery, seq: pw.Field) -> int:
    """The seq a stream starts after: Last-Event-ID, else ``after``, else just before the
    newest ``limit`` rows of ``newest``."""
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        resumed = parse_row_id(header.strip())
        if resumed is None:
            fail(422, "Last-Event-ID is the id of the last event received: a whole number")
        return resumed
    if query.after is not None:
        return query.after
    seqs = [row.seq for row in newest.order_by(seq.desc()).limit(query.limit)]
    return seqs[-1] - 1 if len(seqs) == query.limit else 0


def _stored(
    query: LogQuery, rows: pw.SelectQuery, seq: pw.Field, document: Callable[[Any], dict]
) -> Response:
    """The JSON form: the first ``limit`` rows after ``after``, else the newest ``limit``."""
    if query.after is None:
        found = list(rows.order_by(seq.desc()).limit(query.limit))[::-1]
    else:
        found = list(rows.where(seq > query.after).order_by(seq).limit(query.limit))
    last = found[-1].seq if found else (query.after or 0)
    response = jsonify({"lines": [document(row) for row in found], "after": last})
    response.headers["Cache-Control"] = "no-store"
    return response


class _AppLogFrom(AppLogFeed):
    """An app's log from a given seq on (the API chooses its tail itself, by ``limit``)."""

    def snapshot(self) -> list[Frame]:
        return SeqFeed.snapshot(self)


def _app_log(app: App, query: AppLogQuery, deployment_id: int | None = None) -> Response:
    feed = _AppLogFrom(
        app.id, 0, deployment_id=deployment_id, processes=frozenset(query.process),
        streams=frozenset(query.stream), since=parse_since(query.since),
    )  # fmt: skip
    if not _wants_stream(query):
        return _stored(query, feed.query(), AppLog.seq, app_log_document)
    feed.seen = _stream_start(query, feed.query(), AppLog.seq)  # every row up to it is "sent"
    return log_response(feed)


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------


@bp.get("/apps/<slug>/logs")
@operation(
    "logs", TokenScope.READ, out=AppLogOut, query=AppLogQuery, errors=(404,),
    media=_stream_doc(APP_EVENTS),
)  # fmt: skip
def app_log(slug: str):
    """The app's log: Helios's steps, Nomad's task events and what its processes printed.

    JSON by default; with `Accept: text/event-stream` or `follow=true`, a live stream of the
    same lines (filters apply to both).
    """
    return _app_log(_app(slug), read_query(AppLogQuery))


@bp.get("/apps/<slug>/deployments/<int:deployment_id>/log")
@operation(
    "logs", TokenScope.READ, out=AppLogOut, query=AppLogQuery, errors=(404,),
    media=_stream_doc(RUN_EVENTS),
)  # fmt: skip
def deployment_log(slug: str, deployment_id: int):
    """One deployment's log: its steps, and its allocations' task events and output.

    JSON by default; with `Accept: text/event-stream` or `follow=true`, a live stream that ends
    with `end` once the deployment is over.
    """
    app = _app(slug)
    found = Deployment.get_or_none((Deployment.id == deployment_id) & (Deployment.app == app.id))
    if found is None:
        fail(404, f"{app.slug} has no deployment #{deployment_id}: see its deployments")
    return _app_log(app, read_query(AppLogQuery), deployment_id=found.id)


def _build_line(row: LogChunk) -> dict[str, Any]:
    return {"seq": row.seq, "task": row.task, "stream": row.stream, "text": row.text}


@bp.get("/apps/<slug>/builds/<int:number>/log")
@operation(
    "builds", TokenScope.READ, out=BuildLogOut, query=LogQuery, errors=(404,),
    media=_stream_doc(RUN_EVENTS),
)  # fmt: skip
def build_log(slug: str, number: int):
    """A build's log: what fetching the commit and building the image printed.

    JSON by default; with `Accept: text/event-stream` or `follow=true`, a live stream that ends
    with `end` once the build is over and its log complete.
    """
    app = _app(slug)
    build = Build.get_or_none((Build.app == app.id) & (Build.number == number))
    if build is None:
        fail(404, f"{app.slug} has no build #{number}: see its builds")
    query = read_query(LogQuery)
    rows = LogChunk.select().where((LogChunk.build == build.id) & (LogChunk.text != ""))
    if not _wants_stream(query):
        return _stored(query, rows, LogChunk.seq, _build_line)
    return build_log_response(build.id, _stream_start(query, rows, LogChunk.seq))
