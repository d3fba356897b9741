"""The dashboard: every app of the teams a person belongs to, with its last deployment."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_login import current_user, login_required
from peewee import JOIN, fn

from panel.cluster import probe_cluster
from panel.models import App, Deployment, Membership, Team

bp = Blueprint("dashboard", __name__)


def _apps_with_last_deployment(user_id: int) -> list[tuple[App, Deployment | None]]:
    teams = Membership.select(Membership.team).where(Membership.user == user_id)
    latest = (
        Deployment.select(Deployment.app, fn.MAX(Deployment.id).alias("last_id"))
        .group_by(Deployment.app)
        .alias("latest")
    )
    rows = (
        App.select(App, Team, Deployment)
        .join(Team)
        .switch(App)
        .join(latest, JOIN.LEFT_OUTER, on=(latest.c.app_id == App.id))
        .join(
            Deployment,
            JOIN.LEFT_OUTER,
            on=(Deployment.id == latest.c.last_id),
            attr="last_deployment",
        )
        .where(App.team.in_(teams))
        .order_by(App.slug)
    )
    return [(app, getattr(app, "last_deployment", None)) for app in rows]


@bp.get("/")
@login_required
def index():
    """List apps with status and last deploy; say whether a cluster is connected."""
    cluster = probe_cluster(current_app.extensions["helios.settings"])
    apps = _apps_with_last_deployment(current_user.id)
    return render_template("dashboard.html", apps=apps, cluster=cluster)
