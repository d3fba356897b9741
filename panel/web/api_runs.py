"""The API's one-off runs: run a command once in an app's live release, read how it went, and
read (or follow) what it printed.

``POST /apps/<slug>/runs`` queues a run (:func:`panel.actions.runs.request_run`) and answers 202
with the run and where to follow it; ``GET /apps/<slug>/runs/<id>`` is its state and exit
code; ``GET /apps/<slug>/runs/<id>/log`` its output, as the other logs of the API
(``panel.web.api_logs``): JSON, or with ``Accept: text/event-stream`` (``?follow=true``) a
live stream that ends with ``end`` once the run is over and its output stored. The output is
scrubbed of the app's secrets before it is stored; the log's last line, from Helios, says how
the run ended and the command's exit code.

The routes belong to the API blueprint: ``panel.web.api`` imports this module, which registers
them on its ``bp``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar

from flask import Response, jsonify, url_for
from pydantic import Field

from panel.actions.logs import LOG_CHANNEL, app_log_document
from panel.actions.runs import request_run
from panel.events import CHANNEL
from panel.models import AppLog, OneOffRun, Role, RunStatus, TokenScope, utcnow
from panel.render.run import (
    RUN_ARGS_MAX,
    RUN_TIMEOUT_DEFAULT,
    RUN_TIMEOUT_RANGE,
    validate_run_command,
    validate_run_timeout,
)
from panel.schema.apps import Time
from panel.schema.base import Resource, checked
from panel.web.api import _app, _created, _redis, _settings, _user, bp
from panel.web.api_io import AppLogOut, LogQuery, dump, fail, read_body, read_query
from panel.web.api_logs import RUN_EVENTS, _stored, _stream_doc, _stream_start, _wants_stream
from panel.web.logs import LOG_SETTLE, AppLogFeed, SeqFeed
from panel.web.openapi import operation
from panel.web.paths import ID_MAX
from panel.web.streams import Frame, live_stream

__all__ = ["RunIn", "RunLogFeed", "RunOut", "create_run", "get_run", "run_log"]

_LOW, _HIGH = RUN_TIMEOUT_RANGE


class RunIn(Resource):
    """A command to run once in the app's live release."""

    example: ClassVar[dict[str, Any] | None] = {
        "command": ["python", "manage.py", "migrate"],
        "timeout": 600,
    }

    command: Annotated[list[str], checked(validate_run_command, "command")] = Field(
        description="The program and its arguments, as a list (no shell: give "
        '`["sh", "-c", "..."]` for one). At most 64 arguments and 4096 bytes.',
        min_length=1,
        max_length=RUN_ARGS_MAX,
        examples=[["python", "manage.py", "migrate"]],
    )
    timeout: Annotated[int | None, checked(validate_run_timeout, "timeout")] = Field(
        None,
        description=f"Seconds the command may run before it is stopped (default "
        f"{RUN_TIMEOUT_DEFAULT}).",
        ge=_LOW,
        le=_HIGH,
    )


class RunOut(Resource):
    """A one-off run: its command, where it is, and once it ended, the command's exit code."""

    id: int = Field(description="The run's id.", ge=1)
    app: str
    release: int = Field(description="The release it runs in (the live one when requested).")
    command: list[str] = Field(description="The program and its arguments.")
    timeout: int = Field(description="Seconds it may run before it is stopped.")
    status: RunStatus
    status_message: str = Field(description="Why it ended so (empty while it runs).")
    exit_code: int | None = Field(description="The command's exit code, once it exited.")
    nomad_job_id: str | None = Field(description="Its Nomad batch job, once registered.")
    requested_by: str = Field(description="Who asked for it.")
    requested_at: Time
    started_at: Time
    finished_at: Time
    log_url: str = Field(description="Its output (JSON, or a live stream).")


def run_json(run: OneOffRun, slug: str) -> dict[str, Any]:
    """A run as the API answers it."""
    return dump(
        RunOut, run, app=slug, release=run.release.number, command=list(run.command),
        timeout=run.timeout_s, requested_by=run.requested_by_name,
        log_url=url_for("api.run_log", slug=slug, run_id=run.id),
    )  # fmt: skip


def _run_or_404(app_id: int, slug: str, run_id: int) -> OneOffRun:
    run = None
    if run_id <= ID_MAX:
        run = OneOffRun.get_or_none((OneOffRun.id == run_id) & (OneOffRun.app == app_id))
    if run is None:
        fail(404, f"{slug} has no run #{run_id}")
    return run


class RunLogFeed(AppLogFeed):
    """A run's output from a given seq on; it ends once the run ended and Nomad ended both of
    its output streams (or LOG_SETTLE after it ended, whichever comes first)."""

    def __init__(self, app_id: int, run_id: int) -> None:
        super().__init__(app_id, 0)
        self.run_id = run_id

    snapshot = SeqFeed.snapshot

    def accept(self, message: Any) -> bool:
        if isinstance(message, dict) and "subject" in message:
            data = message.get("data")
            return (
                str(message["subject"]).startswith("v1.run.")
                and isinstance(data, dict)
                and data.get("run_id") == self.run_id
            )
        return SeqFeed.accept(self, message)

    def wanted(self, row: dict[str, Any]) -> bool:
        return bool(row.get("text")) and row.get("run_id") == self.run_id

    def query(self):
        return AppLog.select().where(
            (AppLog.app == self.app_id) & (AppLog.run == self.run_id) & (AppLog.text != "")
        )

    def render(self, message: dict[str, Any]) -> list[Frame]:
        if "subject" in message:
            return self._read()
        frames = SeqFeed.render(self, message)
        if message.get("final") and message.get("run_id") == self.run_id:
            return frames + self._read()  # its last stream may have ended
        return frames

    def over(self) -> bool:
        run = OneOffRun.get_or_none(OneOffRun.id == self.run_id)
        if run is None:
            return True
        if not RunStatus(run.status).is_terminal:
            return False
        if run.nomad_job_id is None:
            return True  # it never reached Nomad: there is no output to wait for
        ended = AppLog.select().where((AppLog.run == self.run_id) & AppLog.final).count()
        if ended >= 2:  # stdout and stderr
            return True
        left = (run.finished_at or utcnow()) + LOG_SETTLE - utcnow()
        if left.total_seconds() <= 0:
            return True
        self.ending_at = time.monotonic() + left.total_seconds()
        return False


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------


@bp.post("/apps/<slug>/runs")
@operation(
    "runs", TokenScope.DEPLOY, body=RunIn, out=RunOut, ok=202, location=True, errors=(404, 409)
)
def create_run(slug: str):
    """Run a command once in the app's live release: its image, env and secrets.

    The command runs as a Nomad batch job (`<app>-run-<id>`), never restarted; follow
    `log_url` for its output and read the run for its `exit_code`. It can read every secret of
    the app, so it takes the deployer role. 409 when the app has no live release (deploy it
    first)."""
    app = _app(slug, Role.DEPLOYER)
    body = read_body(RunIn)
    run = request_run(
        actor=_user(), app=app, settings=_settings(), redis_conn=_redis(),
        command=list(body.command), timeout=body.timeout,
    )  # fmt: skip
    location = url_for("api.get_run", slug=app.slug, run_id=run.id)
    return _created(run_json(OneOffRun.get_by_id(run.id), app.slug), location, status=202)


@bp.get("/apps/<slug>/runs/<int:run_id>")
@operation("runs", TokenScope.READ, out=RunOut, errors=(404,))
def get_run(slug: str, run_id: int):
    """One run of a command: where it is, and once it ended, the command's exit code."""
    app = _app(slug)
    return jsonify(run_json(_run_or_404(app.id, app.slug, run_id), app.slug))


@bp.get("/apps/<slug>/runs/<int:run_id>/log")
@operation(
    "runs", TokenScope.READ, out=AppLogOut, query=LogQuery, errors=(404,),
    media=_stream_doc(RUN_EVENTS),
)  # fmt: skip
def run_log(slug: str, run_id: int) -> Response:
    """What a run's command printed (scrubbed of the app's secrets), then how it ended.

    JSON by default; with `Accept: text/event-stream` or `follow=true`, a live stream that ends
    with `end` once the run is over and its output stored. The last line (stream `helios`)
    gives the command's exit code."""
    app = _app(slug)
    run = _run_or_404(app.id, app.slug, run_id)
    query = read_query(LogQuery)
    feed = RunLogFeed(app.id, run.id)
    if not _wants_stream(query):
        return _stored(query, feed.query(), AppLog.seq, app_log_document)
    feed.seen = _stream_start(query, feed.query(), AppLog.seq)
    return live_stream(
        [LOG_CHANNEL, CHANNEL], feed.snapshot, feed.render, accept=feed.accept, idle=feed.idle
    )
