"""The JSON API at /api/v1: personal API tokens only, JSON in and out, thin over panel.actions.apps.

Sessions are not accepted here, only ``Authorization: Bearer <token>``: a browser's cookie can
never drive the API, so there is no cross-site request to forge and the blueprint is exempt
from CSRF. Every error is ``{"error": code, "message": text}`` (plus ``field``, and ``errors``
listing every field at fault on 422). Each view declares its contract with ``operation``; the
OpenAPI document at /api/v1/openapi.json is generated from those and the schema models.
"""

from __future__ import annotations

from typing import Any

import peewee as pw
import redis
from flask import Blueprint, abort, current_app, g, jsonify, render_template, request, url_for
from pydantic import Field, RootModel
from werkzeug.exceptions import HTTPException, NotFound

from panel.actions.apps import (
    ActionError,
    add_domain,
    create_app,
    deploy_image_role,
    pending_for,
    remove_domain,
    request_deploy,
    request_reapply,
    request_rollback,
    set_env,
    unset_env,
    update_app,
)
from panel.actions.builds import RequestedBuild
from panel.actions.deletion import delete_app
from panel.actions.deployments import cancel_deployment
from panel.actions.domain_checks import Address, addresses_of
from panel.actions.drift import drift_rows, live_deployments
from panel.actions.github import request_branch_build
from panel.actions.tokens import (
    create_token,
    resolve_token,
    revoke_token,
)
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import (
    ApiToken,
    App,
    Build,
    Deployment,
    Domain,
    EnvVar,
    Membership,
    Release,
    Role,
    Team,
    TokenScope,
    User,
)
from panel.schema.accounts import MeOut, TokenCreated, TokenIn, TokenOut, list_model, page_model
from panel.schema.apps import (
    AppDeletedOut,
    AppOut,
    AppPatch,
    BuildOut,
    DeleteAppIn,
    DeployIn,
    DeploymentOut,
    DomainIn,
    DomainOut,
    EnvIn,
    EnvOut,
    NewApp,
    ReleaseOut,
    RollbackIn,
)
from panel.schema.base import Resource
from panel.schema.domains import AddressOut
from panel.schema.drift import DriftOut
from panel.schema.pending import PendingOut
from panel.validation import ValidationError, validate_domain, validate_env_key, validate_slug
from panel.web import csrf
from panel.web.access import (
    ACTION_STATUS,
    Principal,
    app_or_404,
    check_access,
    role_in,
    team_or_404,
)
from panel.web.api_io import (
    app_json,
    deployment_json,
    domain_json,
    dump,
    env_json,
    error_response,
    fail,
    membership_json,
    page_of,
    read_body,
    release_json,
    sent,
    token_json,
)
from panel.web.openapi import build_document, inline_markup, operation, reference
from panel.web.ratelimit import RateLimiter

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

ID_MAX = 2**63 - 1  # the largest row id any supported database stores
PAGED = {"api.list_apps", "api.list_releases", "api.list_deployments", "api.list_builds"}
OPEN = {"api.openapi_document", "api.docs"}  # the description needs no token


# ---------------------------------------------------------------------------------------------
# Authentication and errors
# ---------------------------------------------------------------------------------------------


def _limiter() -> RateLimiter:
    limiter = current_app.extensions.get("helios.api_limiter")
    if limiter is None:  # built on first use, from the settings the app runs with
        settings = _settings()
        limiter = RateLimiter(settings.api_rate_limit, settings.effective_redis_url, "api")
        current_app.extensions["helios.api_limiter"] = limiter
    return limiter


def _spend(key: str) -> None:
    """Count this request against ``key``'s budget; 429 with Retry-After once it is spent."""
    budget = _limiter().hit(key)
    if not budget.allowed:
        response = error_response(
            429,
            f"too many requests: this {key.split(':')[0]} may make "
            f"{_settings().api_rate_limit} (HELIOS_API_RATE_LIMIT); try again in "
            f"{budget.retry_after} s",
        )
        response.headers["Retry-After"] = str(budget.retry_after)
        abort(response)


@bp.before_request
def _authenticate() -> None:
    """Resolve the bearer token and spend from its budget; a session cookie counts for nothing."""
    if request.endpoint in OPEN:
        return
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    token = resolve_token(secret.strip()) if scheme.lower() == "bearer" and secret.strip() else None
    if token is None:
        # Failed and missing tokens spend from the address's budget: guessing tokens is slow.
        _spend(f"address:{request.remote_addr}")
    if scheme.lower() != "bearer" or not secret.strip():
        fail(
            401,
            "send a personal API token as 'Authorization: Bearer <token>' (create one on the "
            "panel's API tokens page, then `helios login`); session cookies are not accepted by "
            "the API",
        )
    if token is None:
        fail(401, "this API token is unknown, expired or revoked: create a new one")
    _spend(f"token:{token.id}")
    g.principal = Principal(token.user, token)


@bp.before_request
def _check_query() -> None:
    """Query parameters are allow-listed too: pages take page and per_page, a view declaring a
    query model the model's fields."""
    if request.endpoint in OPEN:
        return
    allowed = ("page", "per_page") if request.endpoint in PAGED else ()
    declared = getattr(current_app.view_functions.get(request.endpoint), "helios_operation", None)
    if declared is not None and declared.query is not None:
        allowed += tuple(declared.query.model_fields)
    for name in request.args:
        if name not in allowed:
            takes = f"only {', '.join(allowed)}" if allowed else "none"
            fail(
                422,
                f"unknown query parameter {name[:100]!r}: this request takes {takes}",
                name[:100],
            )


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    status = exc.code or 500
    return error_response(status, exc.description or exc.name)


@bp.errorhandler(ActionError)
def _action_error(exc: ActionError):
    status = ACTION_STATUS.get(exc.code, 400)
    return error_response(status, str(exc), exc.field, exc.code, errors=exc.errors)


def _principal() -> Principal:
    return g.principal


def _user() -> User:
    return g.principal.user


def _app(slug: str, needed: Role = Role.VIEWER) -> App:
    """The app ``slug`` of one of the caller's teams, with at least ``needed`` there."""
    try:
        validate_slug(slug)
        return app_or_404(slug, _principal(), needed)
    except (ValidationError, NotFound):
        fail(404, f"no app named {slug[:63]!r} in your teams: `helios apps` lists them")


def _settings() -> Settings:
    return current_app.extensions["helios.settings"]


def _redis() -> redis.Redis:
    return current_app.extensions["helios.redis"]


def _created(body: dict[str, Any], location: str, status: int = 201):
    response = jsonify(body)
    response.status_code = status
    response.headers["Location"] = location
    return response


# ---------------------------------------------------------------------------------------------
# The caller
# ---------------------------------------------------------------------------------------------


def _document() -> dict[str, Any]:
    document = current_app.extensions.get("helios.openapi")
    if document is None:  # built once, from the routes the app really has
        document = current_app.extensions["helios.openapi"] = build_document(current_app)
    return document


@bp.get("/openapi.json")
@operation("meta", None, media=("application/json", {"type": "object"}))
def openapi_document():
    """The OpenAPI 3.1 description of this API (no token needed)."""
    return jsonify(_document())


@bp.get("/docs")
@operation("meta", None, media=("text/html", {"type": "string"}))
def docs():
    """This API's reference, as a page to read (no token needed)."""
    document = _document()
    return render_template(
        "api_docs.html", doc=document, sections=reference(document), markup=inline_markup
    )


@bp.get("/me")
@operation("account", TokenScope.READ, out=MeOut)
def me():
    """The token's owner, their teams and roles, and the token itself."""
    principal = _principal()
    memberships = (
        Membership.select(Membership, Team)
        .join(Team)
        .where(Membership.user == principal.user.id)
        .order_by(Team.slug)
    )
    return jsonify(
        {
            "user": {"email": principal.user.email, "name": principal.user.name},
            "teams": [membership_json(m.team, m.role) for m in memberships],
            "token": token_json(principal.token, principal.token.id),
        }
    )


# ---------------------------------------------------------------------------------------------
# Apps
# ---------------------------------------------------------------------------------------------


def _last_deployments(apps: list[App]) -> dict[int, Deployment]:
    last_ids = (
        Deployment.select(pw.fn.MAX(Deployment.id))
        .where(Deployment.app.in_([app.id for app in apps]))
        .group_by(Deployment.app)
    )
    rows = Deployment.select(Deployment, Release).join(Release).where(Deployment.id.in_(last_ids))
    return {row.app_id: row for row in rows}


def _apps_json(apps: list[App]) -> list[dict[str, Any]]:
    last = _last_deployments(apps) if apps else {}
    return [app_json(app, last.get(app.id)) for app in apps]


@bp.get("/apps")
@operation("apps", TokenScope.READ, out=page_model(AppOut), paged=True)
def list_apps():
    """The apps of every team the caller belongs to, by name."""
    teams = Membership.select(Membership.team).where(Membership.user == _user().id)
    query = App.live(App, Team).join(Team).where(App.team.in_(teams)).order_by(App.slug)
    return page_of(query, _apps_json)


def _team_for_new_app(slug: str | None) -> Team:
    if slug is not None:
        try:
            validate_slug(slug, "team")
            return team_or_404(slug, _principal(), Role.ADMIN)
        except (ValidationError, NotFound):
            fail(404, f"you are not in a team named {slug[:63]!r}", "team")
    teams = list(
        Team.select().join(Membership).where(Membership.user == _user().id).order_by(Team.slug)
    )
    if len(teams) != 1:
        names = ", ".join(t.slug for t in teams) or "none"
        fail(422, f"name the team of the new app (your teams: {names})", "team")
    team_or_404(teams[0].slug, _principal(), Role.ADMIN)
    return teams[0]


@bp.post("/apps")
@operation(
    "apps", TokenScope.ADMIN, body=NewApp, out=AppOut, ok=201, location=True, errors=(404, 409)
)
def create_app_view():
    """Create an app from an image or a GitHub repo."""
    body = read_body(NewApp)
    team = _team_for_new_app(body.team)
    app = create_app(
        actor=_user(), team=team, redis_conn=_redis(), **body.model_dump(exclude={"team"})
    )
    app = App.select(App, Team).join(Team).where(App.id == app.id).get()
    return _created(app_json(app), url_for("api.get_app", slug=app.slug))


@bp.get("/apps/<slug>")
@operation("apps", TokenScope.READ, out=AppOut, errors=(404,))
def get_app(slug: str):
    """One app, with its last deployment."""
    return jsonify(_apps_json([_app(slug)])[0])


@bp.delete("/apps/<slug>")
@operation("apps", TokenScope.ADMIN, body=DeleteAppIn, out=AppDeletedOut, ok=202, errors=(404, 409))
def delete_app_view(slug: str):
    """Delete an app; `confirm` must be its name.

    Answers at once (202): its domains, variables and secrets are gone and its name is free;
    a worker stops and purges its Nomad job and variable. Its deployments, releases and logs are
    kept for HELIOS_DELETED_APP_RETENTION_DAYS, its events stay in the team's audit log. 409
    while a deployment or build of it is under way (wait for it or cancel it); 422 when
    `confirm` is not its name.
    """
    app = _app(slug, Role.ADMIN)
    body = read_body(DeleteAppIn)
    settings = _settings()
    tombstone = delete_app(
        actor=_user(), app=app, confirm=body.confirm, settings=settings, redis_conn=_redis()
    )
    days = settings.deleted_app_retention_days
    message = (
        f"{tombstone.slug} is deleted: its Nomad job is being stopped and purged; its "
        f"deployments and logs are kept for {days} days"
    )
    answer = dump(
        AppDeletedOut, tombstone, app=tombstone.slug, retention_days=days, message=message
    )
    return jsonify(answer), 202


@bp.patch("/apps/<slug>")
@operation("apps", TokenScope.ADMIN, body=AppPatch, out=AppOut, errors=(404,))
def update_app_view(slug: str):
    """Change an app's settings; they apply from its next deploy."""
    app = _app(slug, Role.ADMIN)
    changes = sent(read_body(AppPatch))
    if not changes:
        fail(422, f"nothing to change: send any of {', '.join(AppPatch.model_fields)}")
    update_app(actor=_user(), app=app, redis_conn=_redis(), **changes)
    return jsonify(_apps_json([_app(slug)])[0])


# ---------------------------------------------------------------------------------------------
# Environment and domains
# ---------------------------------------------------------------------------------------------


@bp.get("/apps/<slug>/env")
@operation("env", TokenScope.READ, out=list_model(EnvOut), errors=(404,))
def list_env(slug: str):
    """An app's environment variables; secret values are never returned."""
    app = _app(slug)
    rows = EnvVar.select().where(EnvVar.app == app.id).order_by(EnvVar.key)
    return jsonify({"items": [env_json(row) for row in rows]})


@bp.put("/apps/<slug>/env/<key>")
@operation("env", TokenScope.ADMIN, body=EnvIn, out=EnvOut, errors=(404,))
def set_env_view(slug: str, key: str):
    """Set a variable (a secret is encrypted and never shown again)."""
    app = _app(slug, Role.ADMIN)
    body = read_body(EnvIn)
    row = set_env(
        actor=_user(), app=app, key=key, value=body.value, secret=body.secret,
        cipher=SecretCipher.from_settings(_settings()), redis_conn=_redis(),
    )  # fmt: skip
    return jsonify(env_json(row))


@bp.delete("/apps/<slug>/env/<key>")
@operation("env", TokenScope.ADMIN, ok=204, errors=(404,))
def unset_env_view(slug: str, key: str):
    """Remove a variable or secret."""
    app = _app(slug, Role.ADMIN)
    try:
        validate_env_key(key, "key")
    except ValidationError:
        fail(404, f"{app.slug} has no variable {key[:128]!r}", "key")
    unset_env(actor=_user(), app=app, key=key, redis_conn=_redis())
    return "", 204


@bp.get("/apps/<slug>/domains")
@operation("domains", TokenScope.READ, out=list_model(DomainOut), errors=(404,))
def list_domains(slug: str):
    """The custom domains routed to an app."""
    app = _app(slug)
    rows = Domain.select().where(Domain.app == app.id).order_by(Domain.hostname)
    return jsonify({"items": [domain_json(row) for row in rows]})


_PART_KEYS = ("state", "label", "message")


def _part_json(part: dict[str, Any] | None) -> dict[str, Any] | None:
    if not part:
        return None
    facts = {key: value for key, value in part.items() if key not in _PART_KEYS}
    return {key: part.get(key, "") for key in _PART_KEYS} | {"facts": facts}


def _address_json(address: Address) -> dict[str, Any]:
    row = address.state
    return dump(
        AddressOut, row, hostname=address.hostname, url=address.url, default=address.is_default,
        state=row.state if row else None, summary=row.summary if row else "",
        dns=_part_json(row.dns if row else None), routing=_part_json(row.routing if row else None),
        tls=_part_json(row.tls if row else None), checked_at=row.checked_at if row else None,
    )  # fmt: skip


@bp.get("/apps/<slug>/urls")
@operation("domains", TokenScope.READ, out=list_model(AddressOut), errors=(404,))
def list_urls(slug: str):
    """Where the app is reached: its default address, then each custom domain, with what the
    last domain check found for each (DNS, routing in Traefik, the TLS certificate served)."""
    addresses = addresses_of(_app(slug), _settings().base_domain)
    return jsonify({"items": [_address_json(address) for address in addresses]})


@bp.post("/apps/<slug>/domains")
@operation(
    "domains",
    TokenScope.ADMIN,
    body=DomainIn,
    out=DomainOut,
    ok=201,
    location=True,
    errors=(404, 409),
)
def add_domain_view(slug: str):
    """Route a custom domain to an app (served with TLS after its next deploy)."""
    app = _app(slug, Role.ADMIN)
    body = read_body(DomainIn, base_domain=_settings().base_domain)
    domain = add_domain(
        actor=_user(), app=app, hostname=body.hostname,
        base_domain=_settings().base_domain, redis_conn=_redis(),
    )  # fmt: skip
    location = url_for("api.remove_domain_view", slug=app.slug, hostname=domain.hostname)
    return _created(domain_json(domain), location)


@bp.delete("/apps/<slug>/domains/<hostname>")
@operation("domains", TokenScope.ADMIN, ok=204, errors=(404,))
def remove_domain_view(slug: str, hostname: str):
    """Stop routing a custom domain to an app."""
    app = _app(slug, Role.ADMIN)
    try:
        hostname = validate_domain(hostname.lower(), "hostname")
    except ValidationError:
        fail(404, f"{hostname[:253]!r} is not a domain of {app.slug}", "hostname")
    remove_domain(actor=_user(), app=app, hostname=hostname, redis_conn=_redis())
    return "", 204


# ---------------------------------------------------------------------------------------------
# Releases and deployments
# ---------------------------------------------------------------------------------------------


def _deployments(where: Any) -> pw.SelectQuery:
    return (
        Deployment.select(Deployment, Release, User)
        .join(Release)
        .switch(Deployment)
        .join(User, pw.JOIN.LEFT_OUTER, on=(Deployment.triggered_by == User.id))
        .where(where)
    )


@bp.get("/apps/<slug>/releases")
@operation("deployments", TokenScope.READ, out=page_model(ReleaseOut), paged=True, errors=(404,))
def list_releases(slug: str):
    """An app's releases, newest first."""
    app = _app(slug)
    query = (
        Release.select(Release, User)
        .join(User, pw.JOIN.LEFT_OUTER, on=(Release.created_by == User.id))
        .where(Release.app == app.id)
        .order_by(Release.number.desc())
    )
    return page_of(query, lambda rows: [release_json(row) for row in rows])


@bp.get("/apps/<slug>/deployments")
@operation("deployments", TokenScope.READ, out=page_model(DeploymentOut), paged=True, errors=(404,))
def list_deployments(slug: str):
    """An app's deployments, newest first."""
    app = _app(slug)
    query = _deployments(Deployment.app == app.id).order_by(Deployment.id.desc())
    return page_of(query, lambda rows: [deployment_json(row, app.slug) for row in rows])


def _accepted(app: App, deployment: Deployment):
    row = _deployments(Deployment.id == deployment.id).get()
    location = url_for("api.get_deployment", deployment_id=row.id)
    return _created(deployment_json(row, app.slug), location, status=202)


class BuildAccepted(Resource):
    """A build a deploy of a repo app requested: once built, the commit is deployed."""

    build: int = Field(description="The build's number in the app.", ge=1)
    git_sha: str = Field(description="The commit being built (40 hex digits).")
    branch: str = Field(description="The app's branch the commit was read from.")
    status: str = Field(description="The build's status now (queued, running …).")
    created: bool = Field(description="False when a build of this commit was under way already.")
    message: str = Field(description="What happened, in words.")
    url: str = Field(description="The build's page in the panel (live).")


class DeployAccepted(RootModel[DeploymentOut | BuildAccepted]):
    """A deployment (an image app, or another image), or a build (a repo app)."""


def _build_accepted(app: App, requested: RequestedBuild):
    build = requested.build
    verb = "started" if requested.created else "is under way already"
    body = BuildAccepted(
        build=build.number, git_sha=build.git_sha, branch=build.branch, status=build.status,
        created=requested.created, message=f"build #{build.number} of {build.git_sha[:7]} {verb}",
        url=_settings().effective_external_url
        + url_for("builds.show", slug=app.slug, number=build.number),
    )  # fmt: skip
    location = url_for("api.get_build", slug=app.slug, number=build.number)
    return _created(body.model_dump(), location, status=202)


@bp.post("/apps/<slug>/deployments")
@operation(
    "deployments",
    TokenScope.DEPLOY,
    body=DeployIn,
    body_optional=True,
    out=DeployAccepted,
    ok=202,
    location=True,
    errors=(404,),
)
def create_deployment(slug: str):
    """Cut a release from the app's configuration (optionally a new image) and deploy it.

    A repo app without `image` is built first: the head of its branch, read from GitHub (or the
    commit `git_sha` names), and deployed once built; the answer is then the build, and
    `Location` the app. GitHub refusing or unreachable is a 422 or 502 that says why.
    """
    app = _app(slug, Role.DEPLOYER)
    body = read_body(DeployIn, optional=True)
    if app.repo and not body.image:
        requested = request_branch_build(
            actor=_user(), app=app, settings=_settings(),
            cipher=SecretCipher.from_settings(_settings()), redis_conn=_redis(),
            ref=body.git_sha,
        )  # fmt: skip
        return _build_accepted(app, requested)
    if body.image and body.image != app.image:
        # Another image receives every secret: that takes the role (and token scope) set by
        # HELIOS_IMAGE_DEPLOY_ROLE, not just deploy.
        check_access(_principal(), app.team_id, deploy_image_role(_settings()))
    requested = request_deploy(
        actor=_user(), app=app, settings=_settings(), redis_conn=_redis(),
        image=body.image or None, git_sha=body.git_sha,
    )  # fmt: skip
    return _accepted(app, requested.deployment)


@bp.post("/apps/<slug>/rollback")
@operation(
    "deployments",
    TokenScope.DEPLOY,
    body=RollbackIn,
    out=DeploymentOut,
    ok=202,
    location=True,
    errors=(404,),
)
def rollback(slug: str):
    """Deploy an earlier release again, as a new deployment."""
    app = _app(slug, Role.DEPLOYER)
    body = read_body(RollbackIn)
    requested = request_rollback(
        actor=_user(), app=app, release_number=body.release, settings=_settings(),
        redis_conn=_redis(),
    )  # fmt: skip
    return _accepted(app, requested.deployment)


@bp.get("/apps/<slug>/drift")
@operation("deployments", TokenScope.READ, out=DriftOut, errors=(404,))
def get_drift(slug: str):
    """How the app's job in Nomad compared with its live release at the last drift check.

    The check runs every HELIOS_DRIFT_INTERVAL seconds and changes nothing; `state` is null
    until an app with a live release was checked. `diff` is what a re-apply would change."""
    app = _app(slug)
    row = drift_rows([app.id]).get(app.id)
    live = live_deployments([app.id]).get(app.id)
    return jsonify(
        dump(
            DriftOut,
            row,
            app=app.slug,
            state=row.state if row else None,
            diff=row.diff if row else "",
            release=live.release.number if live else None,
            checked_at=row.checked_at if row else None,
            detected_at=row.detected_at if row else None,
        )
    )


@bp.get("/apps/<slug>/pending")
@operation("deployments", TokenScope.READ, out=PendingOut, errors=(404,))
def get_pending(slug: str):
    """What the app's next deploy would change over its live release, one readable line each.

    Settings, variables, secrets (never their values) and domains changed since the live
    release; `helios deploy APP` (or `POST /apps/{slug}/deployments`) applies them."""
    pending = pending_for(_app(slug))
    if pending is None:
        return jsonify(dump(PendingOut, None, live_release=None, changes=[]))
    return jsonify(dump(PendingOut, pending))


@bp.post("/apps/<slug>/reapply")
@operation(
    "deployments", TokenScope.DEPLOY, out=DeploymentOut, ok=202, location=True, errors=(404, 409)
)
def reapply(slug: str):
    """Deploy the app's live release again, over a job changed, stopped or purged outside Helios.

    No new release is cut and no pending setting is applied: the release that runs is rolled
    out again with canaries, as any deployment."""
    app = _app(slug, Role.DEPLOYER)
    requested = request_reapply(actor=_user(), app=app, settings=_settings(), redis_conn=_redis())
    return _accepted(app, requested.deployment)


@bp.post("/apps/<slug>/deployments/<int:deployment_id>/cancel")
@operation("deployments", TokenScope.DEPLOY, out=DeploymentOut, errors=(404, 409))
def cancel_deployment_view(slug: str, deployment_id: int):
    """Cancel a deployment Nomad has not accepted yet: it ends `cancelled` and never deploys.

    409 once it ended, once Nomad accepted its job (roll back or deploy again instead), or
    while a worker submits it to Nomad at this moment (try again in a few seconds)."""
    app = _app(slug, Role.DEPLOYER)
    mine = (Deployment.id == deployment_id) & (Deployment.app == app.id)
    row = _deployments(mine).first() if deployment_id <= ID_MAX else None
    if row is None:
        fail(404, f"{app.slug} has no deployment #{deployment_id}: see its deployments")
    cancel_deployment(_user(), row, _redis(), _settings())
    return jsonify(deployment_json(_deployments(Deployment.id == row.id).get(), app.slug))


def _build_json(build: Build, app_slug: str) -> dict[str, Any]:
    return dump(BuildOut, build, app=app_slug, settings_from_repo=sorted(build.repo_settings or {}))


@bp.get("/apps/<slug>/builds")
@operation("builds", TokenScope.READ, out=page_model(BuildOut), paged=True, errors=(404,))
def list_builds(slug: str):
    """A repo app's builds, newest first."""
    app = _app(slug)
    query = Build.select().where(Build.app == app.id).order_by(Build.number.desc())
    return page_of(query, lambda rows: [_build_json(row, app.slug) for row in rows])


@bp.get("/apps/<slug>/builds/<int:number>")
@operation("builds", TokenScope.READ, out=BuildOut, errors=(404,))
def get_build(slug: str, number: int):
    """One build of the app; ``deployment_id`` names the deployment it queued once built."""
    app = _app(slug)
    row = Build.get_or_none((Build.app == app.id) & (Build.number == number))
    if row is None:
        fail(404, f"{app.slug} has no build #{number}: see its builds")
    return jsonify(_build_json(row, app.slug))


@bp.get("/deployments/<int:deployment_id>")
@operation("deployments", TokenScope.READ, out=DeploymentOut, errors=(404,))
def get_deployment(deployment_id: int):
    """One deployment, if it belongs to an app of the caller's teams."""
    row = _deployments(Deployment.id == deployment_id).first() if deployment_id <= ID_MAX else None
    app = App.get_by_id(row.app_id) if row is not None else None
    if app is None or role_in(_user(), app.team_id) is None:
        fail(404, f"no deployment #{deployment_id} in your teams")
    return jsonify(deployment_json(row, app.slug))


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


@bp.get("/tokens")
@operation("account", TokenScope.READ, out=list_model(TokenOut))
def list_tokens():
    """The caller's own API tokens, newest first (never their secrets)."""
    current = _principal().token.id
    rows = ApiToken.select().where(ApiToken.user == _user().id).order_by(ApiToken.id.desc())
    return jsonify({"items": [token_json(row, current) for row in rows]})


@bp.post("/tokens")
@operation("account", TokenScope.ADMIN, body=TokenIn, out=TokenCreated, ok=201)
def create_token_view():
    """Create a token, never stronger or longer-lived than the calling token; its secret is
    in this response and nowhere else, ever."""
    body = read_body(TokenIn)
    principal = _principal()
    new = create_token(
        principal.user, body.name, body.scopes, body.days, parent=principal.token,
        redis_conn=_redis(),
    )  # fmt: skip
    response = jsonify({"token": token_json(new.row, None), "secret": new.secret})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/tokens/<int:token_id>")
@operation("account", TokenScope.READ, ok=204, errors=(404,))
def revoke_token_view(token_id: int):
    """Revoke a token and the tokens it minted: any token may revoke itself, others need the
    admin scope."""
    principal = _principal()
    if token_id != principal.token.id and not principal.has_scope(TokenScope.ADMIN):
        fail(403, "revoking another token needs the 'admin' scope (a token may revoke itself)")
    try:
        if token_id > ID_MAX:
            raise ActionError("not_found", "no such token")
        revoke_token(principal.user, token_id, redis_conn=_redis())
    except ActionError:
        fail(404, f"you have no token #{token_id}")
    return "", 204


# The logs', the notifiers' and the teams' routes live in modules of their own; importing them
# registers them on ``bp``.
from panel.web import (  # noqa: E402, F401
    api_lifecycle,
    api_logs,
    api_notifiers,
    api_runs,
    api_teams,
)
