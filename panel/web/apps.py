"""App pages: create an app, its overview, its settings and domains, its variables and secrets.

Thin views: parse a form, call an action, show its error next to the field or redirect.
Reading needs any role in the app's team; changing settings needs admin (403 otherwise).
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import login_required
from peewee import JOIN, ModelSelect

from panel.actions.apps import (
    ActionError,
    add_domain,
    create_app,
    remove_domain,
    set_env,
    unset_env,
    update_app,
)
from panel.crypto import SecretCipher
from panel.models import (
    App,
    Deployment,
    DeploymentStatus,
    Domain,
    EnvVar,
    Membership,
    Release,
    Role,
    Team,
    User,
)
from panel.schema.apps import AppSettings
from panel.web.access import abort_for, app_or_404, role_in
from panel.web.forms import AppForm, DeployForm, DomainForm, EnvForm, NewAppForm
from panel.web.pages import show_action_error, signed_in

bp = Blueprint("apps", __name__)

RECENT_DEPLOYMENTS = 5
RECENT_RELEASES = 10
SECRET_MASK = "••••••••"  # noqa: S105 - what a secret shows instead of its value


def _redis():
    return current_app.extensions["helios.redis"]


def _can(app: App, needed: Role) -> bool:
    role = role_in(signed_in().user, app.team_id)
    return role is not None and role.rank >= needed.rank


def deployments_of(app: App) -> ModelSelect:
    """Query of an app's deployments with release and trigger, newest first."""
    return (
        Deployment.select(Deployment, Release, User)
        .join(Release)
        .switch(Deployment)
        .join(User, JOIN.LEFT_OUTER, on=(Deployment.triggered_by == User.id))
        .where(Deployment.app == app.id)
        .order_by(Deployment.id.desc())
    )


def live_deployment(app: App) -> Deployment | None:
    """The app's last successful deployment: its release is what runs now."""
    return (
        Deployment.select(Deployment.id, Deployment.release)
        .where((Deployment.app == app.id) & (Deployment.status == DeploymentStatus.SUCCEEDED))
        .order_by(Deployment.id.desc())
        .first()
    )


# ---------------------------------------------------------------------------------------------
# Create, overview
# ---------------------------------------------------------------------------------------------


def _admin_teams(user: User) -> list[Team]:
    strong = [Role.OWNER.value, Role.ADMIN.value]
    return list(
        Team.select()
        .join(Membership)
        .where((Membership.user == user.id) & (Membership.role.in_(strong)))
        .order_by(Team.slug)
    )


@bp.route("/apps/new", methods=["GET", "POST"])
@login_required
def new():
    """The form that creates an app in one of the teams the person administers."""
    principal = signed_in()
    teams = _admin_teams(principal.user)
    if not teams:
        abort(403, "Creating an app needs the admin or owner role in a team: ask a team owner.")
    form = NewAppForm()
    form.team.choices = [team.slug for team in teams]
    status = 422 if form.is_submitted() else 200
    if form.validate_on_submit():
        team = next((team for team in teams if team.slug == form.team.data), None)
        try:
            if team is None:
                raise ActionError("invalid", "Pick one of your teams.", "team")
            app = create_app(
                actor=principal.user, team=team, redis_conn=_redis(),
                **form.values("slug", *AppSettings.model_fields),
            )  # fmt: skip
        except ActionError as exc:
            status = show_action_error(form, exc)
        else:
            flash(f"Created {app.slug}. Deploy it when its settings look right.")
            return redirect(url_for("apps.show", slug=app.slug))
    return render_template("apps/new.html", form=form), status


def render_overview(app: App, deploy_form: DeployForm, status: int = 200):
    """The app's overview page; the deploy view shows it again with the form's errors."""
    releases = (
        Release.select()
        .where(Release.app == app.id)
        .order_by(Release.number.desc())
        .limit(RECENT_RELEASES)
    )
    domains = Domain.select().where(Domain.app == app.id).order_by(Domain.hostname)
    page = render_template(
        "apps/show.html",
        app=app,
        deploy_form=deploy_form,
        deployments=list(deployments_of(app).limit(RECENT_DEPLOYMENTS)),
        releases=list(releases),
        live=live_deployment(app),
        domains=list(domains),
        can_deploy=_can(app, Role.DEPLOYER),
    )
    return page, status


@bp.get("/apps/<slug>")
@login_required
def show(slug: str):
    """An app at a glance: deploy it, its recent deployments, its releases to roll back to."""
    return render_overview(app_or_404(slug, signed_in()), DeployForm())


# ---------------------------------------------------------------------------------------------
# Settings and domains
# ---------------------------------------------------------------------------------------------


def _render_settings(app: App, form: AppForm, domain_form: DomainForm, status: int = 200):
    domains = Domain.select().where(Domain.app == app.id).order_by(Domain.hostname)
    page = render_template(
        "apps/settings.html",
        app=app,
        form=form,
        domain_form=domain_form,
        domains=list(domains),
        can_admin=_can(app, Role.ADMIN),
    )
    return page, status


@bp.get("/apps/<slug>/settings")
@login_required
def settings(slug: str):
    """The app's settings and domains (read-only below the admin role)."""
    app = app_or_404(slug, signed_in())
    return _render_settings(app, AppForm(obj=app), DomainForm())


@bp.post("/apps/<slug>/settings")
@login_required
def update(slug: str):
    """Save the app's settings; they apply from its next deploy."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    form = AppForm()
    if not form.validate_on_submit():
        return _render_settings(app, form, DomainForm(), 422)
    try:
        update_app(actor=principal.user, app=app, redis_conn=_redis(), **form.values())
    except ActionError as exc:
        return _render_settings(app, form, DomainForm(), show_action_error(form, exc))
    flash("Settings saved: they apply from the next deploy.")
    return redirect(url_for("apps.settings", slug=slug))


@bp.post("/apps/<slug>/domains")
@login_required
def add_domain_view(slug: str):
    """Route a custom domain to the app."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    form = DomainForm()
    if not form.validate_on_submit():
        return _render_settings(app, AppForm(obj=app), form, 422)
    try:
        domain = add_domain(
            actor=principal.user, app=app, hostname=form.hostname.data,
            base_domain=current_app.extensions["helios.settings"].base_domain,
            redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        status = show_action_error(form, exc)
        return _render_settings(app, AppForm(obj=app), form, status)
    flash(f"{domain.hostname} is routed to {app.slug} from its next deploy.")
    return redirect(url_for("apps.settings", slug=slug))


@bp.post("/apps/<slug>/domains/<hostname>/remove")
@login_required
def remove_domain_view(slug: str, hostname: str):
    """Stop routing a custom domain to the app."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    try:
        remove_domain(actor=principal.user, app=app, hostname=hostname, redis_conn=_redis())
    except ActionError as exc:
        abort_for(exc)
    flash(f"{hostname} is no longer routed to {app.slug} after its next deploy.")
    return redirect(url_for("apps.settings", slug=slug))


# ---------------------------------------------------------------------------------------------
# Environment variables and secrets
# ---------------------------------------------------------------------------------------------


def _render_env(app: App, form: EnvForm, status: int = 200):
    rows = EnvVar.select().where(EnvVar.app == app.id).order_by(EnvVar.key)
    # A secret's stored (encrypted) value never reaches the template.
    variables = [
        {
            "key": row.key,
            "value": SECRET_MASK if row.is_secret else row.value,
            "secret": row.is_secret,
            "updated_at": row.updated_at,
        }
        for row in rows
    ]
    page = render_template(
        "apps/env.html", app=app, form=form, variables=variables, can_admin=_can(app, Role.ADMIN)
    )
    return page, status


@bp.get("/apps/<slug>/env")
@login_required
def env(slug: str):
    """The app's variables; secrets show masked."""
    return _render_env(app_or_404(slug, signed_in()), EnvForm())


@bp.post("/apps/<slug>/env")
@login_required
def set_env_view(slug: str):
    """Set a variable or secret; it applies from the next deploy."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    form = EnvForm()
    if not form.validate_on_submit():
        return _render_env(app, form, 422)
    cipher = SecretCipher.from_settings(current_app.extensions["helios.settings"])
    try:
        row = set_env(
            actor=principal.user, app=app, key=form.key.data, value=form.value.data or "",
            secret=form.secret.data, cipher=cipher, redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        return _render_env(app, form, show_action_error(form, exc))
    kind = "secret" if row.is_secret else "variable"
    flash(f"Set {kind} {row.key}: it applies from the next deploy.")
    return redirect(url_for("apps.env", slug=slug))


@bp.post("/apps/<slug>/env/<key>/remove")
@login_required
def unset_env_view(slug: str, key: str):
    """Remove a variable or secret; the next deploy runs without it."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    try:
        unset_env(actor=principal.user, app=app, key=key, redis_conn=_redis())
    except ActionError as exc:
        abort_for(exc)
    flash(f"Removed {key}: the next deploy runs without it.")
    return redirect(url_for("apps.env", slug=slug))
