"""Deploy and roll back from the panel; deployment history, detail and its live JSON twin.

The detail page shows a deployment as it was when served; ``helios.js`` polls the JSON twin
every second and updates the status and progress message in place until the deployment ends.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, url_for
from flask_login import login_required

from panel.actions.apps import ActionError, request_deploy, request_rollback
from panel.models import App, Deployment, DeploymentStatus, Role
from panel.web.access import abort_for, app_or_404
from panel.web.apps import deployments_of, live_deployment, render_overview
from panel.web.forms import DeployForm
from panel.web.pages import paginate, show_action_error, signed_in

bp = Blueprint("deployments", __name__)

HISTORY_PER_PAGE = 25
NOT_QUEUED = (
    "The deployment is recorded but the queue is unreachable right now: the worker starts it "
    "as soon as Redis answers again."
)


def _requested(app: App, deployment: Deployment, enqueued: bool):
    if not enqueued:
        flash(NOT_QUEUED, "error")
    return redirect(url_for("deployments.show", slug=app.slug, deployment_id=deployment.id))


@bp.post("/apps/<slug>/deploy")
@login_required
def deploy(slug: str):
    """Cut a release from the app's settings (optionally another image) and deploy it."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    form = DeployForm()
    if not form.validate_on_submit():
        return render_overview(app, form, 422)
    try:
        requested = request_deploy(
            actor=principal.user, app=app, settings=current_app.extensions["helios.settings"],
            redis_conn=current_app.extensions["helios.redis"], image=form.image.data or None,
        )  # fmt: skip
    except ActionError as exc:
        return render_overview(app, form, show_action_error(form, exc))
    return _requested(app, requested.deployment, requested.enqueued)


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
    return _requested(app, requested.deployment, requested.enqueued)


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


def describe(deployment: Deployment) -> dict[str, Any]:
    """A deployment as the JSON twin of its page serves it."""

    def iso(value):
        return value.isoformat(timespec="seconds") + "Z" if value else None

    return {
        "id": deployment.id,
        "status": deployment.status,
        "terminal": DeploymentStatus(deployment.status).is_terminal,
        "status_message": deployment.status_message,
        "release": deployment.release.number,
        "image": deployment.release.image,
        "requested_at": iso(deployment.requested_at),
        "started_at": iso(deployment.started_at),
        "finished_at": iso(deployment.finished_at),
        "nomad_job_version": deployment.nomad_job_version,
    }


@bp.get("/apps/<slug>/deployments/<int:deployment_id>")
@login_required
def show(slug: str, deployment_id: int):
    """One deployment: its status (live), its progress message and its timeline."""
    app = app_or_404(slug, signed_in())
    deployment = _deployment_or_404(app, deployment_id)
    return render_template(
        "deployments/show.html", app=app, deployment=deployment, state=describe(deployment)
    )


@bp.get("/apps/<slug>/deployments/<int:deployment_id>.json")
@login_required
def status(slug: str, deployment_id: int):
    """The deployment's current state as JSON, for the detail page to poll."""
    app = app_or_404(slug, signed_in())
    response = jsonify(describe(_deployment_or_404(app, deployment_id)))
    response.headers["Cache-Control"] = "no-store"
    return response
