"""The panel's one-off runs: the Run tab (a form and the app's recent runs), a run's page with
its output followed live, and that output's stream.

The form takes the command as one line, split into words as a POSIX shell would split them
(quotes group, backslashes escape) but never given to a shell: the words are the argument list
:func:`panel.actions.runs.request_run` checks and runs. The run's page follows its output with
the same script as a build's log (``.build-log[data-log-stream]`` in helios.js).
"""

from __future__ import annotations

import shlex

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import login_required
from flask_wtf import FlaskForm
from wtforms import IntegerField, StringField
from wtforms.validators import DataRequired, NumberRange, Optional

from panel.actions.common import ActionError
from panel.actions.logs import LOG_CHANNEL
from panel.actions.runs import request_run
from panel.events import CHANNEL
from panel.models import App, AppLog, OneOffRun, Role, RunStatus
from panel.render.run import RUN_TIMEOUT_DEFAULT, RUN_TIMEOUT_RANGE
from panel.web.access import app_or_404, role_in
from panel.web.api_runs import RunLogFeed
from panel.web.pages import show_action_error, signed_in
from panel.web.paths import parse_row_id
from panel.web.streams import live_stream

__all__ = ["RunForm", "bp"]

bp = Blueprint("runs", __name__)

RECENT_RUNS = 20  # runs the Run tab lists


class RunForm(FlaskForm):
    """A command to run once in the app's live release."""

    command = StringField(
        "Command",
        validators=[DataRequired("Give the command, e.g. python manage.py migrate.")],
        description="Split into words as a shell would (quotes group them), but run without "
        "a shell: write sh -c '…' for one.",
    )
    timeout = IntegerField(
        "Timeout (seconds)",
        validators=[Optional(), NumberRange(*RUN_TIMEOUT_RANGE)],
        description=f"Stopped if it still runs after this long; {RUN_TIMEOUT_DEFAULT} when empty.",
    )


def _can_run(app: App) -> bool:
    role = role_in(signed_in().user, app.team_id)
    return role is not None and Role(role).rank >= Role.DEPLOYER.rank


def _index(app: App, form: RunForm, status: int = 200):
    runs = (
        OneOffRun.select()
        .where(OneOffRun.app == app.id)
        .order_by(OneOffRun.id.desc())
        .limit(RECENT_RUNS)
    )
    page = render_template(
        "runs/index.html", app=app, form=form, runs=list(runs), can_run=_can_run(app)
    )
    return page, status


def _run_or_404(app: App, run_id: int) -> OneOffRun:
    run = OneOffRun.get_or_none((OneOffRun.id == run_id) & (OneOffRun.app == app.id))
    if run is None:
        abort(404)
    return run


@bp.get("/apps/<slug>/runs")
@login_required
def index(slug: str):
    """The Run tab: run a command once in the live release; the app's recent runs."""
    return _index(app_or_404(slug, signed_in()), RunForm())


@bp.post("/apps/<slug>/runs")
@login_required
def create(slug: str):
    """Queue a run of the form's command, then show its page (its output follows live)."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    form = RunForm()
    if not form.validate_on_submit():
        return _index(app, form, 422)
    try:
        command = shlex.split(form.command.data)
    except ValueError as exc:
        form.command.errors = [f"The command cannot be split into words ({exc}): close quotes."]
        return _index(app, form, 422)
    try:
        run = request_run(
            actor=principal.user, app=app, settings=current_app.extensions["helios.settings"],
            redis_conn=current_app.extensions["helios.redis"], command=command,
            timeout=form.timeout.data,
        )  # fmt: skip
    except ActionError as exc:
        return _index(app, form, show_action_error(form, exc))
    return redirect(url_for("runs.show", slug=app.slug, run_id=run.id))


@bp.get("/apps/<slug>/runs/<int:run_id>")
@login_required
def show(slug: str, run_id: int):
    """One run: its command, how it went, and its output (followed live until it ended)."""
    app = app_or_404(slug, signed_in())
    run = _run_or_404(app, run_id)
    rows = list(
        AppLog.select().where((AppLog.run == run.id) & (AppLog.text != "")).order_by(AppLog.seq)
    )
    feed = RunLogFeed(app.id, run.id)
    return render_template(
        "runs/show.html", app=app, run=run, rows=rows, last=rows[-1].seq if rows else 0,
        done=RunStatus(run.status).is_terminal and feed.over(),
    )  # fmt: skip


@bp.get("/apps/<slug>/runs/<int:run_id>/log")
@login_required
def log_stream(slug: str, run_id: int):
    """Server-Sent Events: the run's output after Last-Event-ID (or ``?after=``), stored then
    live, then ``end`` once the run ended and its output is stored."""
    app = app_or_404(slug, signed_in())
    run = _run_or_404(app, run_id)
    after = parse_row_id(request.headers.get("Last-Event-ID") or request.args.get("after") or "0")
    if after is None:
        abort(400)
    feed = RunLogFeed(app.id, run.id)
    feed.seen = after
    return live_stream(
        [LOG_CHANNEL, CHANNEL], feed.snapshot, feed.render, accept=feed.accept, idle=feed.idle
    )
