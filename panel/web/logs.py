"""Reading logs: an app's live log (the Logs tab), a deployment's log, and their downloads.

An app's log holds what Helios did for each deployment (``helios``), what Nomad said of each
allocation's tasks (``nomad``: started, restarting, killed, unhealthy) and what the tasks
printed (``stdout``, ``stderr``), every line tagged with its allocation, process (task group)
and stream, scrubbed of the app's secrets before it was stored (``panel.logs.runtime``).

Streams are Server-Sent Events whose ids are the rows' ``seq``: a client that reconnects with
Last-Event-ID (or ``?after=``) gets exactly what follows. Live rows come from Redis
(``helios:logs``) and are sent as published; the database is read only when a row is missing
in between (a published message lost or late), so a thousand viewers of one app cost Redis
one message each and the database nothing per line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, abort, render_template, request
from flask_login import login_required

from panel.actions.logs import APP_STREAMS, LOG_CHANNEL, app_log_document
from panel.events import CHANNEL
from panel.models import App, AppLog, Deployment, DeploymentStatus, LogChunk, utcnow
from panel.web.access import app_or_404
from panel.web.pages import signed_in
from panel.web.paths import parse_row_id
from panel.web.streams import END, Frame, live_stream

__all__ = [
    "AppLogFeed",
    "SeqFeed",
    "bp",
    "build_log_rows",
    "log_filters",
    "log_response",
    "log_text_response",
]

bp = Blueprint("logs", __name__)

LOG_SETTLE = timedelta(seconds=10)  # after a deployment ended, its log is complete
TAIL = 500  # rows a new viewer of an app's log gets first (the newest ones)
SINCE_MAX = timedelta(days=366)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SeqFeed:
    """A stream of stored rows numbered by ``seq``: the rows after ``after`` first, then each
    row as published, in order and once; a gap (a row not seen) is read from the database.

    Subclasses say which messages are theirs (``mine``), which rows to send (``wanted``), how
    to read rows after a seq (``rows_after``) and when the stream is over (``over``).
    """

    def __init__(self, after: int) -> None:
        self.seen = after  # every row up to this seq was sent or skipped

    def mine(self, message: dict[str, Any]) -> bool:
        raise NotImplementedError

    def wanted(self, row: dict[str, Any]) -> bool:
        return bool(row.get("text"))

    def rows_after(self, seq: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def over(self) -> bool:
        return False

    def frame(self, row: dict[str, Any]) -> Frame:
        return Frame("log", row, id=row["seq"])

    def accept(self, message: Any) -> bool:
        return isinstance(message, dict) and isinstance(message.get("seq"), int) and (
            self.mine(message)
        )  # fmt: skip

    def _read(self) -> list[Frame]:
        done = self.over()  # before reading: a row stored after it is read below
        frames = []
        for row in self.rows_after(self.seen):
            self.seen = max(self.seen, row["seq"])
            if self.wanted(row):
                frames.append(self.frame(row))
        return [*frames, END] if done else frames

    def snapshot(self) -> list[Frame]:
        return self._read()

    def render(self, message: dict[str, Any]) -> list[Frame]:
        seq = message["seq"]
        if seq <= self.seen:
            return []  # sent already (read from the database with an earlier one)
        if seq == self.seen + 1:
            self.seen = seq
            return [self.frame(message)] if self.wanted(message) else []
        return self._read()


class AppLogFeed(SeqFeed):
    """An app's log, or one deployment's (which ends once the deployment is over)."""

    def __init__(
        self,
        app_id: int,
        after: int,
        *,
        deployment_id: int | None = None,
        processes: frozenset[str] = frozenset(),
        streams: frozenset[str] = frozenset(),
        since: Any = None,
    ) -> None:
        super().__init__(after)
        self.app_id, self.deployment_id = app_id, deployment_id
        self.processes, self.streams, self.since = processes, streams, since
        self.ending_at: float | None = None  # when the ended deployment's log is complete

    def mine(self, message: dict[str, Any]) -> bool:
        return message.get("app_id") == self.app_id and "build_id" not in message

    def accept(self, message: Any) -> bool:
        if self.deployment_id is not None and isinstance(message, dict) and "subject" in message:
            data = message.get("data")  # an event: the deployment may be over now
            return (
                str(message["subject"]).startswith("v1.deployment.")
                and isinstance(data, dict)
                and data.get("deployment_id") == self.deployment_id
            )
        return super().accept(message)

    def render(self, message: dict[str, Any]) -> list[Frame]:
        if "subject" in message:
            return self._read()
        return super().render(message)

    def wanted(self, row: dict[str, Any]) -> bool:
        return (
            bool(row.get("text"))
            and (self.deployment_id is None or row.get("deployment_id") == self.deployment_id)
            and (not self.processes or row.get("process") in self.processes | {""})
            and (not self.streams or row.get("stream") in self.streams)
        )

    def query(self):
        query = AppLog.select().where((AppLog.app == self.app_id) & (AppLog.text != ""))
        if self.deployment_id is not None:
            query = query.where(AppLog.deployment == self.deployment_id)
        if self.processes:
            # Helios's own steps belong to no process: a process filter keeps them.
            query = query.where(AppLog.process.in_(sorted(self.processes | {""})))
        if self.streams:
            query = query.where(AppLog.stream.in_(sorted(self.streams)))
        if self.since is not None:
            query = query.where(AppLog.created_at >= self.since)
        return query

    def rows_after(self, seq: int) -> list[dict[str, Any]]:
        newest = (
            AppLog.select(AppLog.seq)
            .where(AppLog.app == self.app_id)
            .order_by(AppLog.seq.desc())
            .limit(1)
            .scalar()
        ) or 0
        rows = [document(row) for row in self.query().where(AppLog.seq > seq).order_by(AppLog.seq)]
        if newest > seq:  # rows not wanted still count as seen
            rows.append({"seq": newest, "text": ""})
        return sorted(rows, key=lambda row: row["seq"])

    def snapshot(self) -> list[Frame]:
        if self.seen == 0 and self.deployment_id is None:  # a new viewer: the tail only
            tail = list(self.query().order_by(AppLog.seq.desc()).limit(TAIL))
            if tail:
                self.seen = tail[-1].seq - 1
        return self._read()

    def over(self) -> bool:
        """A deployment's log is complete LOG_SETTLE after the deployment ended (what its
        allocations printed until then is stored by then)."""
        if self.deployment_id is None:
            return False
        row = Deployment.get_or_none(Deployment.id == self.deployment_id)
        if row is None:
            return True
        if not DeploymentStatus(row.status).is_terminal:
            return False
        left = (row.finished_at or row.requested_at) + LOG_SETTLE - utcnow()
        if left.total_seconds() <= 0:
            return True
        self.ending_at = time.monotonic() + left.total_seconds()
        return False

    def idle(self) -> list[Frame]:
        """Nothing was published for a while: the log may be complete now (no query before)."""
        if self.ending_at is None or time.monotonic() < self.ending_at:
            return []
        return self._read()


def build_log_rows(build_id: int, after: int):
    """A build's stored chunks with text after seq ``after``, in order."""
    return (
        LogChunk.select()
        .where((LogChunk.build == build_id) & (LogChunk.seq > after) & (LogChunk.text != ""))
        .order_by(LogChunk.seq)
    )


def document(row: AppLog) -> dict[str, Any]:
    """A stored row as streams send it (the same fields as published)."""
    return app_log_document(row)


def parse_since(value: str | None) -> Any:
    """``10m``, ``2h``, ``7d``, ``30s`` → the time that long ago; None when not given.
    Raises ValueError with what to write instead."""
    if not value:
        return None
    number, unit = value[:-1], value[-1:]
    if unit not in _UNITS or not (number.isascii() and number.isdigit()) or len(number) > 7:
        raise ValueError("since is a number and a unit: 30s, 10m, 2h or 7d")
    span = timedelta(seconds=int(number) * _UNITS[unit])
    return utcnow() - min(span, SINCE_MAX)


def log_filters(args: Any) -> tuple[frozenset[str], frozenset[str], Any]:
    """(processes, streams, since) from a request's query; ValueError says what is wrong."""
    processes = frozenset(p for p in args.getlist("process") if p)
    streams = frozenset(s for s in args.getlist("stream") if s)
    for name in processes:
        if (
            len(name) > 64
            or not name.replace("-", "").replace("_", "").isascii()
            or not (name.replace("-", "").replace("_", "").isalnum())
        ):
            raise ValueError(
                "process is the name of a process (task group): letters, digits, - and _"
            )
    unknown = streams - set(APP_STREAMS)
    if unknown:
        raise ValueError(f"stream is one of {', '.join(APP_STREAMS)}")
    return processes, streams, parse_since(args.get("since"))


def resume_point(default: int = 0) -> int | None:
    """Where a stream resumes: Last-Event-ID, else ``?after=``; None when malformed."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("after")
    return parse_row_id(raw) if raw else default


def log_response(feed: SeqFeed) -> Response:
    """The SSE response of a log feed (a deployment's also hears of the deployment's events,
    which may end it)."""
    if isinstance(feed, AppLogFeed) and feed.deployment_id is not None:
        return live_stream([LOG_CHANNEL, CHANNEL], feed.snapshot, feed.render,
                           accept=feed.accept, idle=feed.idle)  # fmt: skip
    return live_stream([LOG_CHANNEL], feed.snapshot, feed.render, accept=feed.accept)


def log_text_response(rows: Callable[[], Any], filename: str) -> Response:
    """A stored log as a plain-text download, each line tagged with where it came from."""

    def lines():
        for row in rows():
            tag = f"{row.created_at.isoformat(timespec='seconds')}Z {row.stream}"
            if row.alloc:
                tag += f" {row.process}/{row.alloc[:8]}"
            for line in row.text.splitlines():
                yield f"{tag} | {line}\n"

    response = Response("".join(lines()), mimetype="text/plain")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _deployment_or_404(app: App, deployment_id: int) -> Deployment:
    row = Deployment.get_or_none((Deployment.id == deployment_id) & (Deployment.app == app.id))
    if row is None:
        abort(404)
    return row


def _bad_request(message: str) -> Response:
    return Response(message + "\n", status=400, mimetype="text/plain")


# -- the Logs tab ---------------------------------------------------------------------------------


@bp.get("/apps/<slug>/logs")
@login_required
def index(slug: str):
    """The app's live log: every allocation merged, filterable by process and stream."""
    app = app_or_404(slug, signed_in())
    processes = sorted(
        row.process
        for row in AppLog.select(AppLog.process)
        .where((AppLog.app == app.id) & (AppLog.process != ""))
        .distinct()
    )
    return render_template("apps/logs.html", app=app, processes=processes, streams=APP_STREAMS)


@bp.get("/apps/<slug>/logs/stream")
@login_required
def stream(slug: str):
    """Server-Sent Events: ``log`` rows (id: their seq) of the app, the newest stored ones
    first (or those after Last-Event-ID / ``?after=``), then live; filters ``process``,
    ``stream`` (repeatable) and ``since`` (10m, 2h...)."""
    app = app_or_404(slug, signed_in())
    after = resume_point()
    if after is None:
        return _bad_request("after (or Last-Event-ID) is a row number")
    try:
        processes, streams, since = log_filters(request.args)
    except ValueError as exc:
        return _bad_request(str(exc))
    feed = AppLogFeed(app.id, after, processes=processes, streams=streams, since=since)
    return log_response(feed)


@bp.get("/apps/<slug>/logs.txt")
@login_required
def download(slug: str):
    """The app's stored log as plain text (same filters as the stream)."""
    app = app_or_404(slug, signed_in())
    try:
        processes, streams, since = log_filters(request.args)
    except ValueError as exc:
        return _bad_request(str(exc))
    feed = AppLogFeed(app.id, 0, processes=processes, streams=streams, since=since)
    return log_text_response(lambda: feed.query().order_by(AppLog.seq), f"{app.slug}.log")


# -- one deployment's log ---------------------------------------------------------------------


@bp.get("/apps/<slug>/deployments/<int:deployment_id>/log")
@login_required
def deployment_stream(slug: str, deployment_id: int):
    """Server-Sent Events: the deployment's log (Helios's steps, Nomad's task events, what its
    allocations printed), stored then live, then ``end`` once the deployment is over."""
    app = app_or_404(slug, signed_in())
    deployment = _deployment_or_404(app, deployment_id)
    after = resume_point()
    if after is None:
        return _bad_request("after (or Last-Event-ID) is a row number")
    return log_response(AppLogFeed(app.id, after, deployment_id=deployment.id))


@bp.get("/apps/<slug>/deployments/<int:deployment_id>/log.txt")
@login_required
def deployment_download(slug: str, deployment_id: int):
    """The deployment's stored log as plain text."""
    app = app_or_404(slug, signed_in())
    deployment = _deployment_or_404(app, deployment_id)
    feed = AppLogFeed(app.id, 0, deployment_id=deployment.id)
    return log_text_response(
        lambda: feed.query().order_by(AppLog.seq), f"{app.slug}-deployment-{deployment.id}.log"
    )


# -- why a deployment failed ------------------------------------------------------------------

FAILURE_EVENTS = (
    "Alloc Unhealthy", "Terminated", "Driver Failure", "Restarting", "Not Restarting",
    "Failed Validation", "Killing", "Task hook failed", "Setup Failure", "OOM",
)  # fmt: skip
FAILURE_OUTPUT_LINES = 20


def failure_reason(deployment: Deployment) -> dict[str, Any] | None:
    """What made a failed (or reverted) deployment fail, from its log: Nomad's task events that
    tell (unhealthy, terminated, restarting, driver failures) and the last lines its failing
    allocation printed; None for a deployment that did not fail."""
    if deployment.status not in (DeploymentStatus.FAILED.value, DeploymentStatus.REVERTED.value):
        return None
    events = [
        row
        for row in AppLog.select()
        .where((AppLog.deployment == deployment.id) & (AppLog.stream == "nomad"))
        .order_by(AppLog.seq.desc())
        .limit(200)
        if row.text.startswith(FAILURE_EVENTS)
    ][:6][::-1]
    alloc = events[-1].alloc if events else ""
    output_query = AppLog.select().where(
        (AppLog.deployment == deployment.id) & AppLog.stream.in_(("stdout", "stderr"))
        & (AppLog.text != "")
    )  # fmt: skip
    if alloc:
        output_query = output_query.where(AppLog.alloc == alloc)
    lines: list[str] = []
    for row in output_query.order_by(AppLog.seq.desc()).limit(FAILURE_OUTPUT_LINES):
        lines[:0] = row.text.splitlines()
        if len(lines) >= FAILURE_OUTPUT_LINES:
            break
    return {
        "message": deployment.status_message,
        "events": [
            {
                "process": row.process,
                "alloc": row.alloc[:8],
                "task": row.task,
                "text": row.text.rstrip("\n"),
            }
            for row in events
        ],
        "alloc": alloc[:8],
        "output": lines[-FAILURE_OUTPUT_LINES:],
    }


def deployment_log(deployment: Deployment) -> tuple[list[AppLog], int]:
    """A deployment's stored log rows (with text) and the app's newest seq when read."""
    newest = (
        AppLog.select(AppLog.seq)
        .where(AppLog.app == deployment.app_id)
        .order_by(AppLog.seq.desc())
        .limit(1)
        .scalar()
    ) or 0
    rows = list(
        AppLog.select()
        .where((AppLog.deployment == deployment.id) & (AppLog.text != "") & (AppLog.seq <= newest))
        .order_by(AppLog.seq)
    )
    return rows, newest


@bp.app_template_filter("log_line")
def log_line(row: AppLog | dict[str, Any]) -> str:
    """A stored row as the pages show it, each of its lines tagged (the script does the same):
    ``05:00:01 web/1a2b3c4d stderr: text``, or ``05:00:01 helios: text``."""
    data = document(row) if isinstance(row, AppLog) else row
    clock = str(data.get("time", ""))[11:19]
    source = "helios" if data["stream"] == "helios" else (
        f"{data['process']}/{data['alloc'][:8]} {data['stream']}"
    )  # fmt: skip
    return "".join(f"{clock} {source}: {line}\n" for line in str(data["text"]).splitlines())
