"""The app page's everyday actions: Scale, Restart, Stop and Start.

Thin views over ``panel.actions.lifecycle`` (the deployer role, as for deploying): each is a
POST with the CSRF token from the app page's "Instances" card. Scale and Stop come back to the
app page with a message; Restart and Start queue a deployment of the live release and open its
page. A refusal (a deployment under way, stopped already, a count out of range) is shown on the
app page; a missing app or role gets its error page.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, request, url_for
from flask_login import login_required

from panel.actions.apps import ActionError, Requested
from panel.actions.lifecycle import restart_app, scale_app, start_app, stop_app
from panel.models import App, Event, Role
from panel.web.access import abort_for, app_or_404
from panel.web.pages import signed_in

bp = Blueprint("lifecycle", __name__)

NOT_QUEUED = (
    "The deployment is recorded but the queue is unreachable right now: the worker starts it "
    "as soon as Redis answers again."
)


RECENT_CHANGES = 5  # scales, stops and starts the app page lists
_CHANGES = ("v1.app.scaled", "v1.app.stopped", "v1.app.started")
_LOOKBACK = 200  # of the team's newest such events: an app's are among them in practice


def instance_changes(app: App) -> list[tuple[Event, str]]:
    """The app's newest scales, stops and starts (the audit log has them all), each with a
    line saying what happened."""
    rows = (
        Event.select()
        .where((Event.team == app.team_id) & Event.subject.in_(_CHANGES))
        .order_by(Event.id.desc())
        .limit(_LOOKBACK)
    )
    mine = [row for row in rows if (row.data or {}).get("app_id") == app.id]
    return [(row, _said(row)) for row in mine[:RECENT_CHANGES]]


def _said(row: Event) -> str:
    data = row.data
    if row.subject == "v1.app.scaled":
        return f"scaled from {data['from']} to {data['to']} instance(s)"
    if row.subject == "v1.app.stopped":
        return "stopped"
    return f"started by deployment #{data['deployment_id']} ({data['reason']})"


def _refused(app: App, exc: ActionError):
    """A refusal the person can act on, on the app page; no app or role: its error page."""
    if exc.code in {"forbidden", "not_found"}:
        abort_for(exc)
    flash(exc.message, "error")
    return redirect(url_for("apps.show", slug=app.slug), code=303)


def _deployment_page(app: App, requested: Requested):
    if not requested.enqueued:
        flash(NOT_QUEUED, "error")
    if requested.notice:
        flash(requested.notice, "error")
    return redirect(
        url_for("deployments.show", slug=app.slug, deployment_id=requested.deployment.id)
    )


def _context() -> dict:
    return {
        "settings": current_app.extensions["helios.settings"],
        "redis_conn": current_app.extensions["helios.redis"],
    }


@bp.post("/apps/<slug>/scale")
@login_required
def scale(slug: str):
    """Run the number of instances typed in the Scale form, without a new release."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    try:
        scaled = scale_app(
            actor=principal.user, app=app, count=request.form.get("count", "").strip(),
            redis_conn=current_app.extensions["helios.redis"],
        )  # fmt: skip
    except ActionError as exc:
        return _refused(app, exc)
    flash(f"{app.slug} runs {scaled.count} instance(s) from now on.")
    return redirect(url_for("apps.show", slug=app.slug), code=303)


@bp.post("/apps/<slug>/restart")
@login_required
def restart(slug: str):
    """Replace every instance with a fresh one of the live release, keeping the app up."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    try:
        requested = restart_app(actor=principal.user, app=app, **_context())
    except ActionError as exc:
        return _refused(app, exc)
    return _deployment_page(app, requested)


@bp.post("/apps/<slug>/stop")
@login_required
def stop(slug: str):
    """Stop every instance of the app (its Nomad job stopped, not purged)."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    try:
        stop_app(actor=principal.user, app=app, redis_conn=current_app.extensions["helios.redis"])
    except ActionError as exc:
        return _refused(app, exc)
    flash(f"{app.slug} is stopped: its instances stop now. Start brings it back.")
    return redirect(url_for("apps.show", slug=app.slug), code=303)


@bp.post("/apps/<slug>/start")
@login_required
def start(slug: str):
    """Start a stopped app again with its live release."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    try:
        requested = start_app(actor=principal.user, app=app, **_context())
    except ActionError as exc:
        return _refused(app, exc)
    return _deployment_page(app, requested)
