"""App pages: create an app, its overview, its settings and domains, its GitHub connection,
its variables and secrets.

Thin views: parse a form, call an action, show its error next to the field or redirect.
Reading needs any role in the app's team; changing settings needs admin (403 otherwise).
Creating a repo app offers the person's GitHub repositories (with their GitHub token) and
connects the chosen one: its numeric id, a webhook secret and the push webhook.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

import redis
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import login_required
from flask_wtf import FlaskForm
from peewee import JOIN, ModelSelect
from wtforms import StringField

from panel.actions.apps import (
    ActionError,
    add_domain,
    create_app,
    pending_for,
    remove_domain,
    request_reapply,
    set_env,
    unset_env,
    update_app,
)
from panel.actions.deletion import delete_app
from panel.actions.domain_checks import addresses_of
from panel.actions.drift import drift_rows, live_images
from panel.actions.github import (
    check_webhook,
    connect_repository,
    github_client,
    github_token_of,
    payload_url,
    rotate_webhook_secret,
    set_repo_id,
    webhook_secret_of,
)
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.drivers.github import GitHubError
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
from panel.reconcile.pending import plan_pending
from panel.schema.apps import AppSettings
from panel.validation import ValidationError, validate_branch, validate_repo
from panel.web.access import abort_for, app_or_404, role_in
from panel.web.forms import AppForm, DeployForm, DomainForm, EnvForm, NewAppForm
from panel.web.lifecycle import instance_changes
from panel.web.live import live_state
from panel.web.pages import Page, page_number, show_action_error, signed_in

bp = Blueprint("apps", __name__)

RECENT_DEPLOYMENTS = 5
RECENT_RELEASES = 10
SECRET_MASK = "••••••••"  # noqa: S105 - what a secret shows instead of its value
REPOS_PER_PAGE = 20
REPOS_CACHE_TTL = 120  # seconds one person's repository list serves their pages and searches
_REPOS_KEY = "helios:github-repos:{user_id}"
_NOT_IN_REPO_NAME = re.compile(r"[^A-Za-z0-9._/-]")  # a search can only match these


def _redis() -> redis.Redis:
    return current_app.extensions["helios.redis"]


def _config() -> Settings:
    return current_app.extensions["helios.settings"]


def _cipher() -> SecretCipher:
    return SecretCipher.from_settings(_config())


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


@bp.app_template_global("live_image")
def live_image(app: App) -> str | None:
    """The image the app's live release runs (None before its first successful deploy): what
    every app page's header says it runs, whatever the settings say the next deploy will."""
    return live_images([app.id]).get(app.id)


def live_deployment(app: App) -> Deployment | None:
    """The app's last successful deployment: its release is what runs now."""
    return (
        Deployment.select(Deployment.id, Deployment.release, Deployment.instance_count)
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


# ---------------------------------------------------------------------------------------------
# The repository picker: the person's GitHub repositories, searched and paged here
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picker:
    """What the new app page shows of the person's repositories."""

    q: str
    page: Page | None
    total: int = 0
    error: str = ""


def forget_repositories(redis_conn: redis.Redis, user_id: int) -> None:
    """Drop the person's cached repository list (their GitHub token went)."""
    with contextlib.suppress(redis.RedisError):  # else it expires within REPOS_CACHE_TTL
        redis_conn.delete(_REPOS_KEY.format(user_id=user_id))


def _repositories(user: User, token: str) -> list[dict[str, Any]]:
    """The person's repositories (every page from GitHub), reused for a couple of minutes."""
    key = _REPOS_KEY.format(user_id=user.id)
    try:
        cached = _redis().get(key)
    except redis.RedisError:
        cached = None
    if cached:
        return json.loads(cached)
    found = [asdict(repo) for repo in github_client(_config(), token).repositories()]
    with contextlib.suppress(redis.RedisError):  # else the next page asks GitHub again
        _redis().set(key, json.dumps(found), ex=REPOS_CACHE_TTL)
    return found


def _picker(user: User) -> Picker | None:
    """The person's repositories matching ``?q=``, a page of them; None without a token."""
    token = github_token_of(user, _cipher())
    if token is None:
        return None
    q = _NOT_IN_REPO_NAME.sub("", request.args.get("q", ""))[:100]
    try:
        repos = _repositories(user, token)
    except GitHubError as exc:
        return Picker(q, None, error=str(exc))
    matching = [repo for repo in repos if q.lower() in repo["full_name"].lower()]
    number = page_number()
    start = (number - 1) * REPOS_PER_PAGE
    rows = matching[start : start + REPOS_PER_PAGE]
    return Picker(q, Page(rows, number, len(matching) > start + REPOS_PER_PAGE), len(matching))


def _picked(form: FlaskForm) -> None:
    """Fill the form with the repository picked (``?repo=&branch=``), when it is valid."""
    try:
        repo = validate_repo(request.args["repo"])
        branch = validate_branch(request.args.get("branch") or "main")
    except (KeyError, ValidationError):
        return
    form.repo.data, form.branch.data, form.image.data = repo, branch, ""


def _connect_new(user: User, app: App):
    """Connect a new repo app to GitHub; where to go next, with what happened said."""
    try:
        connection = connect_repository(
            actor=user, app=app, settings=_config(), cipher=_cipher(), redis_conn=_redis()
        )
    except ActionError as exc:
        connection = None
        problem = str(exc)
    else:
        problem = connection.problem
    if connection is not None and connection.hook_id is not None:
        flash(
            f"Created {app.slug} and the webhook on {app.repo}: each push to {app.branch} "
            f"builds and deploys it. Deploy builds the head of {app.branch} now."
        )
        return redirect(url_for("apps.show", slug=app.slug))
    flash(
        f"Created {app.slug}, but Helios did not create the webhook on {app.repo}: {problem}. "
        "Add it by hand as this page shows, then use Check.",
        "error",
    )
    return redirect(url_for("apps.settings", slug=app.slug, _anchor="github"))


@bp.route("/apps/new", methods=["GET", "POST"])
@login_required
def new():
    """The form that creates an app in one of the teams the person administers; with a
    GitHub token, the person's repositories to pick from."""
    principal = signed_in()
    teams = _admin_teams(principal.user)
    if not teams:
        abort(403, "Creating an app needs the admin or owner role in a team: ask a team owner.")
    form = NewAppForm()
    form.team.choices = [team.slug for team in teams]
    status = 422 if form.is_submitted() else 200
    if not form.is_submitted():
        _picked(form)
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
            if app.repo:
                return _connect_new(principal.user, app)
            flash(f"Created {app.slug}. Deploy it when its settings look right.")
            return redirect(url_for("apps.show", slug=app.slug))
    page = render_template(
        "apps/new.html",
        form=form,
        picker=_picker(principal.user),
        github_sign_in=bool(_config().github_client_id),
    )
    return page, status


def render_overview(app: App, deploy_form: DeployForm, status: int = 200):
    """The app's overview page; the deploy view shows it again with the form's errors."""
    releases = (
        Release.select()
        .where(Release.app == app.id)
        .order_by(Release.number.desc())
        .limit(RECENT_RELEASES)
    )
    page = render_template(
        "apps/show.html",
        app=app,
        deploy_form=deploy_form,
        deployments=list(deployments_of(app).limit(RECENT_DEPLOYMENTS)),
        releases=list(releases),
        live=live_deployment(app),
        addresses=addresses_of(app, _config().base_domain),
        can_deploy=_can(app, Role.DEPLOYER),
        now_running=live_state(app, request.args.get("window", "hour")),
        drift=drift_rows([app.id]).get(app.id),
        pending=pending_for(app),
        instance_changes=instance_changes(app),
    )
    return page, status


@bp.get("/apps/<slug>")
@login_required
def show(slug: str):
    """An app at a glance: deploy it, its recent deployments, its releases to roll back to."""
    return render_overview(app_or_404(slug, signed_in()), DeployForm())


@bp.get("/apps/<slug>/plan")
@login_required
def plan(slug: str):
    """Nomad's plan of the app's next deploy (a dry run, read-only: any role); a page of its
    own, so the overview never waits for Nomad (each call is bounded by the driver's timeout)."""
    app = app_or_404(slug, signed_in())
    return render_template(
        "apps/plan.html", app=app, plan=plan_pending(app, _config()), pending=pending_for(app)
    )


@bp.post("/apps/<slug>/reapply")
@login_required
def reapply(slug: str):
    """Deploy the live release again, over a job changed, stopped or purged outside Helios."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    try:
        requested = request_reapply(
            actor=principal.user, app=app, settings=_config(),
            redis_conn=current_app.extensions["helios.redis"],
        )  # fmt: skip
    except ActionError as exc:
        abort_for(exc)
    if not requested.enqueued:
        flash("The re-apply is recorded but the queue is unreachable right now: the worker "
              "starts it as soon as Redis answers again.", "error")  # fmt: skip
    if requested.notice:
        flash(requested.notice, "error")
    return redirect(
        url_for("deployments.show", slug=app.slug, deployment_id=requested.deployment.id)
    )


# ---------------------------------------------------------------------------------------------
# Settings and domains
# ---------------------------------------------------------------------------------------------


class RepoIdForm(FlaskForm):
    """The repository's numeric id, typed in for a webhook added by hand."""

    repo_id = StringField(
        "GitHub repository id",
        filters=[lambda value: value.strip() if isinstance(value, str) else value],
        description="The number GitHub knows the repository by; it survives renames. "
        "'gh api repos/OWNER/REPO --jq .id' prints it, as does repository.id in any delivery "
        "GitHub shows.",
        render_kw={"inputmode": "numeric", "autocomplete": "off", "spellcheck": "false"},
    )


def _github_section(app: App, can_admin: bool) -> dict[str, Any] | None:
    """What the settings page shows of a repo app's GitHub connection (None: an image app).

    The webhook secret is decrypted only for an admin, and only for a webhook added by hand
    (one Helios made needs nobody to paste it)."""
    if not app.repo:
        return None
    by_hand = app.github_hook_id is None
    connected_by = User.get_or_none(User.id == app.connected_by_id) if app.connected_by_id else None
    return {
        "payload_url": payload_url(_config()),
        "by_hand": by_hand,
        "secret": webhook_secret_of(app, _cipher()) if can_admin and by_hand else None,
        "has_secret": bool(app.webhook_secret),
        "has_token": bool(signed_in().user.github_token),
        "connected_by": connected_by.email if connected_by is not None else None,
        "deliveries_url": url_for("apps.show", slug=app.slug) + "/deliveries",
        "repo_id_form": RepoIdForm(),
    }


def _render_settings(app: App, form: AppForm, domain_form: DomainForm, status: int = 200):
    domains = Domain.select().where(Domain.app == app.id).order_by(Domain.hostname)
    can_admin = _can(app, Role.ADMIN)
    github = _github_section(app, can_admin)
    page = render_template(
        "apps/settings.html",
        app=app,
        form=form,
        domain_form=domain_form,
        domains=list(domains),
        can_admin=can_admin,
        can_deploy=_can(app, Role.DEPLOYER),
        github=github,
        config_retention_days=_config().deleted_app_retention_days,
    )
    # A page that may hold the webhook secret is never kept by a browser or a proxy.
    return page, status, {"Cache-Control": "no-store"}


@bp.get("/apps/<slug>/settings")
@login_required
def settings(slug: str):
    """The app's settings, domains and GitHub connection (read-only below the admin role)."""
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


@bp.post("/apps/<slug>/delete")
@login_required
def delete_view(slug: str):
    """Delete the app (its name typed in ``confirm``); to the dashboard, saying what happens.

    A wrong name or a deployment under way comes back to the settings' danger zone with the
    reason; a deleted app's pages answer 404 (its history is kept, see panel.actions.deletion).
    """
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    try:
        delete_app(
            actor=principal.user, app=app, confirm=request.form.get("confirm", "")[:200],
            settings=_config(), redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        if exc.code in {"forbidden", "not_found"}:
            abort_for(exc)
        flash(str(exc), "error")
        return redirect(url_for("apps.settings", slug=slug, _anchor="delete"))
    days = _config().deleted_app_retention_days
    flash(
        f"Deleted {app.slug}: its Nomad job is being stopped and purged, its domains are free. "
        f"Its deployments and logs are kept for {days} days; its events stay in the team's "
        "audit log."
    )
    return redirect(url_for("dashboard.index"))


# ---------------------------------------------------------------------------------------------
# GitHub: the repository's id, the webhook, its secret and its last delivery
# ---------------------------------------------------------------------------------------------


def _back_to_github(app: App):
    return redirect(url_for("apps.settings", slug=app.slug, _anchor="github"))


@bp.post("/apps/<slug>/github/connect")
@login_required
def github_connect(slug: str):
    """Find the repository with the person's GitHub token and create its push webhook."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    try:
        connection = connect_repository(
            actor=principal.user, app=app, settings=_config(), cipher=_cipher(),
            redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        flash(str(exc), "error")
        return _back_to_github(app)
    if connection.hook_id is not None:
        flash(f"Helios created the webhook on {app.repo}: each push to {app.branch} builds it.")
    else:
        flash(f"No webhook was created: {connection.problem}", "error")
    return _back_to_github(app)


@bp.post("/apps/<slug>/github/repo-id")
@login_required
def github_repo_id(slug: str):
    """Record the repository's numeric id by hand (for a webhook added by hand)."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    form = RepoIdForm()
    try:
        set_repo_id(
            actor=principal.user, app=app, repo_id=form.repo_id.data or "", cipher=_cipher(),
            redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        flash(str(exc), "error")
    else:
        flash(f"{app.slug} now takes deliveries from GitHub repository #{app.github_repo_id}.")
    return _back_to_github(app)


@bp.post("/apps/<slug>/github/rotate")
@login_required
def github_rotate(slug: str):
    """Give the app a new webhook secret (and GitHub, for a webhook Helios made)."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.ADMIN)
    try:
        on_github = rotate_webhook_secret(
            actor=principal.user, app=app, settings=_config(), cipher=_cipher(),
            redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        flash(str(exc), "error")
        return _back_to_github(app)
    if on_github:
        flash("New webhook secret: GitHub's webhook has it already.")
    else:
        flash(
            "New webhook secret: paste it into the webhook on GitHub now; until then GitHub's "
            "deliveries are refused."
        )
    return _back_to_github(app)


@bp.post("/apps/<slug>/github/check")
@login_required
def github_check(slug: str):
    """Ask GitHub how the webhook's last delivery went."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    try:
        flash(check_webhook(actor=principal.user, app=app, settings=_config(), cipher=_cipher()))
    except ActionError as exc:
        flash(str(exc), "error")
    return _back_to_github(app)


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
