"""A repo app's builds: the list, one build's page (live), its JSON twin and its stream.

A build page follows the whole way from a push to a running release: the build's state (queued,
fetching, building, pushed), then the deployment it started and that deployment's progress,
over one Server-Sent Events stream. Without JavaScript the page shows the state when served.
The build's log (scrubbed of secrets when collected) has a stream of its own, resumable by
sequence number, and a plain-text download.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, abort, jsonify, render_template, request
from flask_login import login_required

from panel.actions.logs import LOG_CHANNEL
from panel.events import CHANNEL, NOTICE_PREFIX
from panel.models import App, Build, BuildStatus, Deployment, LogChunk, Release, utcnow
from panel.web.access import app_or_404
from panel.web.deployments import describe as describe_deployment
from panel.web.logs import SeqFeed, build_log_rows
from panel.web.pages import paginate, signed_in
from panel.web.paths import parse_row_id
from panel.web.streams import END, Frame, StateFeed, live_stream

bp = Blueprint("builds", __name__)

PER_PAGE = 25
LOG_STREAMS = 4  # fetch and build, stdout and stderr: each ends with a final row
LOG_SETTLE = timedelta(seconds=60)  # after a build ended, its log is complete however it stands


def _iso(value) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def describe(build: Build) -> dict[str, Any]:
    """A build as its JSON twin and its live stream send it."""
    return {
        "number": build.number,
        "status": build.status,
        "terminal": BuildStatus(build.status).is_terminal,
        "status_message": build.status_message,
        "git_sha": build.git_sha,
        "branch": build.branch,
        "reason": build.reason,
        "builder": build.builder,
        "image": build.image,
        "digest": build.digest,
        "exit_code": build.exit_code,
        "nomad_job_id": build.nomad_job_id,
        "deployment_id": build.deployment_id,
        "requested_at": _iso(build.requested_at),
        "started_at": _iso(build.started_at),
        "finished_at": _iso(build.finished_at),
        "settings_from_repo": sorted(build.repo_settings or {}),
    }


def _builds_of(app: App):
    return Build.select().where(Build.app == app.id).order_by(Build.number.desc())


def _build_or_404(app: App, number: int) -> Build:
    row = _builds_of(app).where(Build.number == number).first()
    if row is None:
        abort(404)
    return row


def _deployment(build: Build) -> Deployment | None:
    if build.deployment_id is None:
        return None
    return (
        Deployment.select(Deployment, Release)
        .join(Release)
        .where(Deployment.id == build.deployment_id)
        .first()
    )


@bp.get("/apps/<slug>/builds")
@login_required
def index(slug: str):
    """Every build of the app, newest first."""
    app = app_or_404(slug, signed_in())
    return render_template("builds/index.html", app=app, page=paginate(_builds_of(app), PER_PAGE))


@bp.get("/apps/<slug>/builds/<int:number>")
@login_required
def show(slug: str, number: int):
    """One build, then the deployment it started: live until both ended."""
    app = app_or_404(slug, signed_in())
    build = _build_or_404(app, number)
    deployment = _deployment(build)
    state = describe(build)
    deploy_state = describe_deployment(deployment) if deployment else None
    log_done = _log_done(build)  # before reading: a chunk stored after it is then followed
    chunks = list(build_log_rows(build.id, 0))
    return render_template(
        "builds/show.html", app=app, build=build, state=state, deployment=deployment,
        deploy_state=deploy_state, done=_done(state, deploy_state), log_chunks=chunks,
        log_last=chunks[-1].seq if chunks else 0, log_done=log_done,
    )  # fmt: skip


@bp.get("/apps/<slug>/builds/<int:number>.json")
@login_required
def status(slug: str, number: int):
    """The build's state now, with its deployment's when it started one."""
    app = app_or_404(slug, signed_in())
    build = _build_or_404(app, number)
    deployment = _deployment(build)
    response = jsonify(
        {**describe(build), "deployment": describe_deployment(deployment) if deployment else None}
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _done(state: dict[str, Any], deploy_state: dict[str, Any] | None) -> bool:
    """Nothing more will happen: the build ended, and so did its deployment if it has one."""
    if not state["terminal"]:
        return False
    if state["status"] == BuildStatus.SUCCEEDED.value and state["deployment_id"]:
        return bool(deploy_state and deploy_state["terminal"])
    return True


class _BuildFeed(StateFeed):
    """What a build's stream sends: ``build`` and ``deployment`` states when they change, then
    ``end`` once the build and its deployment are over."""

    def __init__(self, app_id: int, build_id: int) -> None:
        self.app_id = app_id
        self.build_id = build_id
        self.cursor = 0
        self.sent: dict[str, Any] = {}
        self.deployment_id: int | None = None  # the deployment the build started, once known

    def accept(self, message: Any) -> bool:
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return False
        subject, data = str(message.get("subject", "")), message["data"]
        if subject.startswith(("v1.build.", NOTICE_PREFIX + "build.")):
            return data.get("build_id") == self.build_id
        if subject.startswith(("v1.deployment.", NOTICE_PREFIX + "deployment.")):
            return (
                self.deployment_id is not None and data.get("deployment_id") == self.deployment_id
            )
        return False

    def _frames(self) -> list[Frame]:
        build = Build.get_or_none(Build.id == self.build_id)
        if build is None:
            return [END]
        frames = []
        state = describe(build)
        if state != self.sent.get("build"):
            self.sent["build"] = state
            frames.append(Frame("build", state, id=self.cursor))
        deployment = _deployment(build)
        self.deployment_id = build.deployment_id
        deploy_state = describe_deployment(deployment) if deployment else None
        if deploy_state is not None and deploy_state != self.sent.get("deployment"):
            self.sent["deployment"] = deploy_state
            frames.append(Frame("deployment", deploy_state, id=self.cursor))
        if _done(state, deploy_state):
            frames.append(END)
        return frames


@bp.get("/apps/<slug>/builds/<int:number>/stream")
@login_required
def stream(slug: str, number: int):
    """Server-Sent Events: ``build`` and ``deployment`` states after each change, then ``end``."""
    app = app_or_404(slug, signed_in())
    build = _build_or_404(app, number)
    feed = _BuildFeed(app.id, build.id)
    return live_stream([CHANNEL], feed.snapshot, feed.render, accept=feed.accept)


# ---------------------------------------------------------------------------------------------
# The build's log
# ---------------------------------------------------------------------------------------------


def _log_done(build: Build) -> bool:
    """The log is complete: the build ended and every stream of it was ended by its collector
    (or the build ended LOG_SETTLE ago: no follower collected it, or it never ran)."""
    if not BuildStatus(build.status).is_terminal:
        return False
    ended = (
        LogChunk.select(LogChunk.task, LogChunk.stream)
        .where((LogChunk.build == build.id) & LogChunk.final)
        .distinct()
        .count()
    )
    finished = build.finished_at or build.requested_at
    return ended >= LOG_STREAMS or utcnow() - finished >= LOG_SETTLE


class _LogFeed(SeqFeed):
    """What a build log's stream sends: the stored chunks after ``after``, each once and in
    order (as published; read from the database only to fill a gap), then ``end`` once the
    build ended and its log is complete (looked at when a stream ends or the build changes)."""

    def __init__(self, build_id: int, after: int) -> None:
        super().__init__(after)
        self.build_id = build_id

    def accept(self, message: Any) -> bool:
        if not isinstance(message, dict):
            return False
        if "seq" in message:  # a chunk (helios:logs)
            return message.get("build_id") == self.build_id and isinstance(message["seq"], int)
        data = message.get("data")
        subject = str(message.get("subject", ""))
        return (
            subject.startswith("v1.build.")
            and isinstance(data, dict)
            and data.get("build_id") == self.build_id
        )

    def mine(self, message: dict[str, Any]) -> bool:
        return message.get("build_id") == self.build_id

    def frame(self, row: dict[str, Any]) -> Frame:
        data = {name: row[name] for name in ("seq", "task", "stream", "text")}
        return Frame("log", data, id=row["seq"])

    def rows_after(self, seq: int) -> list[dict[str, Any]]:
        return [
            {"seq": row.seq, "task": row.task, "stream": row.stream, "text": row.text}
            for row in build_log_rows(self.build_id, seq)
        ]

    def over(self) -> bool:
        build = Build.get_or_none(Build.id == self.build_id)
        return build is None or _log_done(build)

    def render(self, message: dict[str, Any]) -> list[Frame]:
        if "seq" not in message:  # the build changed: its log may be complete now
            return self._read()
        frames = super().render(message)
        if message.get("final") and not any(frame.ends for frame in frames):
            frames += self._read()  # a stream ended: maybe the last one
        return frames


def build_log_response(build_id: int, after: int) -> Response:
    """The SSE response of a build's log after seq ``after`` (the page's and the API's)."""
    feed = _LogFeed(build_id, after)
    return live_stream([LOG_CHANNEL, CHANNEL], feed.snapshot, feed.render, accept=feed.accept)


@bp.get("/apps/<slug>/builds/<int:number>/log")
@login_required
def log_stream(slug: str, number: int):
    """Server-Sent Events: ``log`` chunks (id: their seq) after Last-Event-ID (or ``?after=``),
    stored then live, then ``end`` once the build ended and its log is complete."""
    app = app_or_404(slug, signed_in())
    build = _build_or_404(app, number)
    after = parse_row_id(request.headers.get("Last-Event-ID") or request.args.get("after") or "0")
    if after is None:
        abort(400)
    return build_log_response(build.id, after)


@bp.get("/apps/<slug>/builds/<int:number>/log.txt")
@login_required
def log_text(slug: str, number: int):
    """The build's stored log as plain text, for download."""
    app = app_or_404(slug, signed_in())
    build = _build_or_404(app, number)
    text = "".join(row.text for row in build_log_rows(build.id, 0))
    response = Response(text, mimetype="text/plain")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{app.slug}-build-{build.number}.log"'
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
