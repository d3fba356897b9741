"""Deploy and roll back from the panel; deployment history, detail, its JSON twin and stream.

Deploying a repo app builds the head of its branch (read from GitHub), then deploys what was
built; deploying another image, or an image app, cuts a release at once.

The detail page shows a deployment as it was when served (it works without JavaScript); then
``helios.js`` follows its live stream (Server-Sent Events: the state now, then each change,
then ``end``) and updates the status, progress message and times in place until it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, url_for
from flask_login import login_required

from panel.actions.apps import ActionError, Requested, request_deploy, request_rollback
from panel.actions.builds import RequestedBuild
from panel.actions.deployments import cancel_deployment, waiting_reason
from panel.actions.github import request_branch_build
from panel.crypto import SecretCipher
from panel.events import CHANNEL, NOTICE_PREFIX
from panel.models import App, Build, Deployment, DeploymentStatus, Release, Role
from panel.web.access import abort_for, app_or_404, role_in
from panel.web.apps import deployments_of, live_deployment, render_overview
from panel.web.forms import DeployForm
from panel.web.logs import build_log_rows, deployment_log, failure_reason
from panel.web.pages import paginate, show_action_error, signed_in
from panel.web.streams import END, Frame, StateFeed, events_about, live_stream

bp = Blueprint("deployments", __name__)

HISTORY_PER_PAGE = 25
NOT_QUEUED = (
    "The deployment is recorded but the queue is unreachable right now: the worker starts it "
    "as soon as Redis answers again."
)
BUILD_NOT_QUEUED = (
    "The build is recorded but the queue is unreachable right now: the worker starts it as "
    "soon as Redis answers again."
)


def _requested(app: App, requested: Requested):
    if not requested.enqueued:
        flash(NOT_QUEUED, "error")
    if requested.notice:
        flash(requested.notice, "error")
    deployment = requested.deployment
    return redirect(url_for("deployments.show", slug=app.slug, deployment_id=deployment.id))


@bp.post("/apps/<slug>/deploy")
@login_required
def deploy(slug: str):
    """Cut a release from the app's settings (optionally another image) and deploy it; a repo
    app builds the head of its branch first."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    form = DeployForm()
    if not form.validate_on_submit():
        return render_overview(app, form, 422)
    if app.repo and not form.image.data:
        return _build(app, form)
    try:
        requested = request_deploy(
            actor=principal.user, app=app, settings=current_app.extensions["helios.settings"],
            redis_conn=current_app.extensions["helios.redis"], image=form.image.data or None,
        )  # fmt: skip
    except ActionError as exc:
        return render_overview(app, form, show_action_error(form, exc))
    return _requested(app, requested)


def build_started(requested: RequestedBuild) -> str:
    """What a person is told about the build their deploy requested."""
    build = requested.build
    if requested.created:
        return f"Build #{build.number} of {build.git_sha[:7]} started: it deploys once built."
    return f"Build #{build.number} of {build.git_sha[:7]} is under way already."


def _build(app: App, form: DeployForm):
    """Build the head of the repo app's branch, then deploy it; back to the app's overview."""
    settings = current_app.extensions["helios.settings"]
    try:
        requested = request_branch_build(
            actor=signed_in().user, app=app, settings=settings,
            cipher=SecretCipher.from_settings(settings),
            redis_conn=current_app.extensions["helios.redis"],
        )  # fmt: skip
    except ActionError as exc:
        return render_overview(app, form, show_action_error(form, exc))
    flash(build_started(requested))
    if not requested.enqueued:
        flash(BUILD_NOT_QUEUED, "error")
    return redirect(url_for("apps.show", slug=app.slug))


@bp.post("/apps/<slug>/releases/<int:number>/rollback")
@login_required
def rollback(slug: str, number: int):
    """Deploy an earlier release again."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    try:
        requested = request_rollback(
            actor=principal.user, app=app, release_number=number,
            settings=current_app.extensions["helios.settings"],
            redis_conn=current_app.extensions["helios.redis"],
        )  # fmt: skip
    except ActionError as exc:
        abort_for(exc)
    return _requested(app, requested)


@bp.get("/apps/<slug>/deployments")
@login_required
def index(slug: str):
    """Every deployment of the app, newest first, a page at a time."""
    app = app_or_404(slug, signed_in())
    page = paginate(deployments_of(app), HISTORY_PER_PAGE)
    return render_template("deployments/index.html", app=app, page=page, live=live_deployment(app))


def _deployment_or_404(app: App, deployment_id: int) -> Deployment:
    row = deployments_of(app).where(Deployment.id == deployment_id).first()
    if row is None:
        abort(404)
    return row


def _waiting(deployment: Deployment) -> str:
    """Why the deployment waits, with this panel's settings and Redis (see waiting_reason)."""
    return waiting_reason(
        deployment,
        current_app.extensions["helios.settings"],
        current_app.extensions["helios.redis"],
    )


def describe(deployment: Deployment, waiting: str = "") -> dict[str, Any]:
    """A deployment as its JSON twin and its live stream send it (no settings, no secrets).

    ``waiting`` says why a queued deployment cannot go on (no worker, no cluster); while Nomad
    has not accepted it, ``cancellable`` is true.
    """

    def iso(value):
        return value.isoformat(timespec="seconds") + "Z" if value else None

    terminal = DeploymentStatus(deployment.status).is_terminal
    return {
        "id": deployment.id,
        "status": deployment.status,
        "terminal": terminal,
        "status_message": deployment.status_message,
        "release": deployment.release.number,
        "image": deployment.release.image,
        "requested_at": iso(deployment.requested_at),
        "started_at": iso(deployment.started_at),
        "finished_at": iso(deployment.finished_at),
        "nomad_job_version": deployment.nomad_job_version,
        "failure": failure_reason(deployment),
        "waiting": waiting,
        "cancellable": not terminal and not deployment.registered,
    }


@bp.get("/apps/<slug>/deployments/<int:deployment_id>")
@login_required
def show(slug: str, deployment_id: int):
    """One deployment: its status (live), its progress message and its timeline."""
    app = app_or_404(slug, signed_in())
    deployment = _deployment_or_404(app, deployment_id)
    log_rows, log_last = deployment_log(deployment)
    state = describe(deployment, _waiting(deployment))
    state_failure = state["failure"]
    build = Build.get_or_none(Build.deployment == deployment.id)
    build_log = list(build_log_rows(build.id, 0)) if build else []
    role = role_in(signed_in().user, app.team_id)
    return render_template(
        "deployments/show.html", app=app, deployment=deployment, state=state,
        log_rows=log_rows, log_last=log_last, failure=state_failure, build=build,
        build_log=build_log, can_deploy=role is not None and role.rank >= Role.DEPLOYER.rank,
    )  # fmt: skip


@bp.get("/apps/<slug>/deployments/<int:deployment_id>.json")
@login_required
def status(slug: str, deployment_id: int):
    """The deployment's current state as JSON: the document its live stream sends."""
    app = app_or_404(slug, signed_in())
    deployment = _deployment_or_404(app, deployment_id)
    response = jsonify(describe(deployment, _waiting(deployment)))
    response.headers["Cache-Control"] = "no-store"
    return response


class _DeploymentFeed(StateFeed):
    """What a deployment's live stream sends: its state now, again whenever it changed, and
    ``end`` once it is terminal.

    Each frame's id is the newest event the state reflects (the events table's id), so a
    browser's Last-Event-ID says how recent its page is; a new stream starts from the state
    now whatever it says. A state is sent only when it differs from the one sent before.
    """

    def __init__(
        self, deployment_id: int, waiting: Callable[[Deployment], str] = lambda _row: ""
    ) -> None:
        self.deployment_id = deployment_id
        self.waiting = waiting
        self.cursor = 0
        self.sent: dict[str, Any] | None = None

    def _frames(self) -> list[Frame]:
        row = (
            Deployment.select(Deployment, Release)
            .join(Release)
            .where(Deployment.id == self.deployment_id)
            .first()
        )
        if row is None:  # gone with its app: nothing more will come
            return [END]
        state = describe(row, self.waiting(row))
        frames = []
        if state != self.sent:
            self.sent = state
            frames.append(Frame("deployment", state, id=self.cursor))
        if state["terminal"]:
            frames.append(END)
        return frames


@bp.post("/apps/<slug>/deployments/<int:deployment_id>/cancel")
@login_required
def cancel(slug: str, deployment_id: int):
    """Cancel a deployment Nomad has not accepted yet; back to its page, which says how."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    deployment = _deployment_or_404(app, deployment_id)
    try:
        cancel_deployment(
            principal.user, deployment, current_app.extensions["helios.redis"],
            current_app.extensions["helios.settings"],
        )  # fmt: skip
    except ActionError as exc:
        flash(f"Not cancelled: {exc}", "error")
    else:
        flash(f"Deployment #{deployment.id} cancelled: nothing of it reached Nomad.")
    return redirect(url_for("deployments.show", slug=app.slug, deployment_id=deployment.id))


@bp.get("/apps/<slug>/deployments/<int:deployment_id>/stream")
@login_required
def stream(slug: str, deployment_id: int):
    """Server-Sent Events: ``deployment`` with the state now, then after each change of it,
    and ``end`` once the deployment is over.

    Who may see the deployment's page may follow it; anyone else gets 404. One connection
    lasts HELIOS_STREAM_LIFETIME seconds at most (EventSource reconnects, and gets the state
    then first); 503 when this process already serves HELIOS_STREAM_MAX streams.
    """
    app = app_or_404(slug, signed_in())
    deployment = _deployment_or_404(app, deployment_id)
    settings = current_app.extensions["helios.settings"]
    redis_conn = current_app.extensions["helios.redis"]
    feed = _DeploymentFeed(deployment.id, lambda row: waiting_reason(row, settings, redis_conn))
    return live_stream(
        [CHANNEL],
        feed.snapshot,
        feed.render,
        # Its events, and the notes of its progress (published, never stored).
        accept=events_about(
            ("v1.deployment.", NOTICE_PREFIX + "deployment."), deployment_id=deployment.id
        ),
    )
