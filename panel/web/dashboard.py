"""The dashboard: the apps of a person's teams with their health (what runs, as the sampler last
saw it in Nomad) and last deployment, paged.

A few small queries per page, whatever the installation's size: one page of apps (and a count
for the pager), then the newest deployment of just those apps, one index seek each. A
thousand-row table is not something a person reads: they page or search.
"""

from __future__ import annotations

import re

from flask import Blueprint, current_app, render_template, request
from flask_login import current_user, login_required
from markupsafe import Markup

from panel.actions.drift import DRIFTED_STATES, drift_rows, live_images
from panel.cluster import probe_cluster
from panel.config import Settings
from panel.domains_state import address_url
from panel.models import App, Deployment, Membership, Release, Role, Team
from panel.web.fragments import cached_render
from panel.web.live import health_of, sparklines
from panel.web.pages import Page, page_number

bp = Blueprint("dashboard", __name__)

APPS_PER_PAGE = 50
# App names are [a-z0-9-]: anything else in a search cannot match, so it is dropped.
_NOT_IN_SLUG = re.compile(r"[^a-z0-9-]")


def search_term() -> str:
    """The ``q`` query argument reduced to characters an app name can contain."""
    return _NOT_IN_SLUG.sub("", request.args.get("q", "").strip().lower())[:63]


def _apps_page(user_id: int, term: str) -> tuple[Page, int]:
    teams = Membership.select(Membership.team).where(Membership.user == user_id)
    apps = App.live(App, Team).join(Team).where(App.team.in_(teams))
    if term:
        apps = apps.where(App.slug.contains(term))
    number = page_number()
    rows = list(apps.order_by(App.slug).limit(APPS_PER_PAGE).offset((number - 1) * APPS_PER_PAGE))
    total = apps.count()
    return Page(rows, number, number * APPS_PER_PAGE < total), total


def _can_create(user_id: int) -> bool:
    strong = [Role.OWNER.value, Role.ADMIN.value]
    return (
        Membership.select()
        .where((Membership.user == user_id) & (Membership.role.in_(strong)))
        .exists()
    )


def _last_deployments(apps: list[App]) -> dict[int, Deployment]:
    if not apps:
        return {}
    # One seek per app down the (app, requested_at) index, however long its history is.
    latest = Deployment.alias()
    newest = (
        latest.select(latest.id)
        .where(latest.app == App.id)
        .order_by(latest.requested_at.desc(), latest.id.desc())
        .limit(1)
    )
    last_ids = App.select(newest).where(App.id.in_([app.id for app in apps]))
    rows = (
        Deployment.select(Deployment.id, Deployment.app, Deployment.status)
        .select_extend(Deployment.requested_at, Release.number)
        .join(Release)
        .where(Deployment.id.in_(last_ids))
    )
    return {row.app_id: row for row in rows}


@bp.get("/")
@login_required
def index():
    """List apps with their health and last deploy; say whether a cluster is connected."""
    settings = current_app.extensions["helios.settings"]
    user_id = current_user.id
    term = search_term()
    number = page_number()
    apps_list = cached_render(
        ("dashboard", user_id, number, term), lambda: _render_apps(settings, user_id, term)
    )
    # The list is what an autoescaping template rendered: HTML already, not text to escape.
    apps_list = Markup(apps_list)  # noqa: S704
    return render_template("dashboard.html", cluster=probe_cluster(settings), apps_list=apps_list)


def _render_apps(settings: Settings, user_id: int, term: str) -> str:
    page, total = _apps_page(user_id, term)
    last = _last_deployments(page.items)
    apps = [(app, last.get(app.id)) for app in page.items]
    ids = [app.id for app in page.items]
    # An app is served at its default address once it has been deployed.
    urls = {
        app.id: address_url(f"{app.slug}.{settings.base_domain}")
        for app in page.items
        if app.id in last
    }
    return render_template(
        "_dashboard_apps.html",
        apps=apps,
        page=page,
        total=total,
        q=term,
        can_create=_can_create(user_id),
        per_page=APPS_PER_PAGE,
        health=health_of(ids),
        sparks=sparklines(ids),
        urls=urls,
        drifted={i: row.state for i, row in drift_rows(ids).items() if row.state in DRIFTED_STATES},
        images=live_images(ids),
    )
