"""The dashboard: every app of the teams a person belongs to, with its last deployment."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_login import current_user, login_required
from peewee import fn

from panel.cluster import probe_cluster
from panel.models import App, Deployment, Membership, Team

bp = Blueprint("dashboard", __name__)


def _apps_with_last_deployment(user_id: int) -> list[tuple[App, Deployment | None]]:
    teams = Membership.select(Membership.team).where(Membership.user == user_id)
    apps = list(App.select(App, Team).join(Team).where(App.team.in_(teams)).order_by(App.slug))
    last_ids = (
        Deployment.select(fn.MAX(Deployment.id))
        .where(Deployment.app.in_([app.id for app in apps]))
        .group_by(Deployment.app)
    )
    last = {d.app_id: d for d in Deployment.select().where(Deployment.id.in_(last_ids))}
    return [(app, last.get(app.id)) for app in apps]


@bp.get("/")
@login_required
def index():
    """List apps with status and last deploy; say whether a cluster is connected."""
    cluster = probe_cluster(current_app.extensions["helios.settings"])
    apps = _apps_with_last_deployment(current_user.id)
    return render_template("dashboard.html", apps=apps, cluster=cluster)
