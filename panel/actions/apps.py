"""The only writers of desired state: permission → validate → write → event → enqueue.

The panel's forms, the JSON API, the CLI and webhooks all call these, so each rule lives here
once. ``actor=None`` means an operator at the server's shell (the `helios` operator commands).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import peewee as pw
import redis

from panel.actions.common import ActionError, FieldError, actor_name, authorize
from panel.actions.limits import Change, Resources, check_team_limits, release_resources
from panel.actions.logs import log_step
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database
from panel.drivers.nomad import nomad_configured
from panel.events import emit
from panel.models import (
    App,
    Deployment,
    DeploymentStatus,
    Domain,
    EnvVar,
    Release,
    Role,
    Team,
    User,
    utcnow,
)
from panel.queue import get_queue
from panel.releases import SNAPSHOT_VERSION, pending_changes, spec_from_snapshot
from panel.schema.apps import AppSettings, DomainIn, EnvIn, EnvKey, NewApp, release_fields
from panel.schema.base import M, Problems, check
from panel.spec import AppSpec
from panel.validation import (
    ValidationError,
    validate_git_sha,
    validate_image,
)

__all__ = [
    "NO_CLUSTER",
    "ActionError",
    "Pending",
    "Requested",
    "add_domain",
    "cluster_notice",
    "create_app",
    "cut_release",
    "deploy_job_id",
    "enqueue_deploy",
    "enqueue_prune",
    "pending_for",
    "preview_spec",
    "remove_domain",
    "request_deploy",
    "request_reapply",
    "request_rollback",
    "set_env",
    "unset_env",
    "update_app",
]

logger = logging.getLogger(__name__)

DEPLOY_QUEUE = "deploys"
DEPLOY_JOB = "panel.reconcile.jobs.deploy_app"
PRUNE_JOB = "panel.reconcile.jobs.prune_secrets"
# Seconds one run of deploy_app may take: waiting for the app's lock, then a few Nomad calls
# (it hands the deployment to the follower once Nomad accepted the job).
DEPLOY_JOB_TIMEOUT = 600


NO_CLUSTER = (
    "No Nomad cluster is connected (NOMAD_ADDR is empty): it will not reach one; cancel it or "
    "set NOMAD_ADDR."
)


def cluster_notice(settings: Settings) -> str:
    """What a new deployment's requester is told at once when it cannot reach a cluster."""
    return "" if nomad_configured(settings) else NO_CLUSTER


def _validated(field: str, validator, *args: Any) -> Any:
    try:
        return validator(*args)
    except ValidationError as exc:
        raise ActionError("invalid", exc.message, field=exc.field or field) from None


# ---------------------------------------------------------------------------------------------
# Apps and their configuration
# ---------------------------------------------------------------------------------------------


def _check(model: type[M], values: Any, **context: Any) -> M:
    """``values`` checked by a schema model; an ``invalid`` ActionError listing every problem."""
    try:
        return check(model, values, context=context)
    except Problems as exc:
        raise ActionError.invalid([FieldError(p.field, p.message) for p in exc.problems]) from None


def create_app(
    *,
    actor: User | None,
    team: Team,
    slug: str,
    redis_conn: redis.Redis | None = None,
    **settings: Any,
) -> App:
    """Create an app that runs an image, or builds from a GitHub repo.

    ``settings`` are fields of :class:`~panel.schema.apps.AppSettings` (defaults for the rest);
    every field at fault is reported at once.
    """
    authorize(actor, team, Role.ADMIN)
    fields = _check(NewApp, {**settings, "slug": slug}).model_dump(exclude={"team"})
    with database.atomic():
        if App.live().where(App.slug == fields["slug"]).exists():
            raise ActionError("conflict", f"an app named {slug!r} exists already", "slug")
        check_team_limits(team, Change(settings=_resources(fields)))
        app = App.create(team=team, **fields)
        emit(
            "v1.app.created",
            {"app": app.slug, "app_id": app.id, "team": team.slug,
             "source": "image" if app.image else "repo"},
            actor=actor_name(actor), team=team, redis_conn=redis_conn,
        )  # fmt: skip
    return app


def _resources(values: Any) -> Resources:
    """The count, CPU and memory in an app's settings (a dict or an App)."""
    get = values.get if isinstance(values, dict) else lambda name: getattr(values, name)
    return Resources(get("count"), get("cpu_mhz"), get("memory_mb"))


def update_app(
    *, actor: User | None, app: App, redis_conn: redis.Redis | None = None, **changes: Any
) -> App:
    """Change an app's settings (None leaves one as is, '' clears image or repo).

    The running release is untouched: the next deploy cuts a release with the new settings.
    Nothing is written and no event is emitted when no value actually changes.
    """
    authorize(actor, app.team, Role.ADMIN)
    names = list(AppSettings.model_fields)
    current = {name: getattr(app, name) for name in names}
    given = {k: v for k, v in changes.items() if v is not None}
    fields = _check(AppSettings, {**current, **given}).model_dump()
    changed = [name for name in names if fields[name] != current[name]]
    if not changed:
        return app
    unlinked: dict[str, Any] = {}
    if "repo" in changed:
        # Another repository: what tied the app to the old one (its id, Helios's hook there,
        # who connected it) no longer applies; it is connected again from its settings page.
        unlinked = {"github_repo_id": None, "github_hook_id": None, "connected_by": None}
    with database.atomic():
        if {"count", "cpu_mhz", "memory_mb"} & set(changed):
            check_team_limits(app.team_id, Change(app.id, settings=_resources(fields)))
        App.update(
            updated_at=utcnow(), **unlinked, **{name: fields[name] for name in changed}
        ).where(App.id == app.id).execute()
        emit(
            "v1.app.updated",
            {"app": app.slug, "app_id": app.id, "fields": changed},
            actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip
    for name in changed:
        setattr(app, name, fields[name])
    for name, value in unlinked.items():
        setattr(app, name, value)
    return app


def set_env(
    *,
    actor: User | None,
    app: App,
    key: str,
    value: str,
    secret: bool,
    cipher: SecretCipher,
    redis_conn: redis.Redis | None = None,
) -> EnvVar:
    """Set an environment variable; secret values are encrypted and never shown again."""
    authorize(actor, app.team, Role.ADMIN)
    problems: list[FieldError] = []
    for model, values in ((EnvKey, {"key": key}), (EnvIn, {"value": value, "secret": secret})):
        try:
            _check(model, values)
        except ActionError as exc:
            problems.extend(exc.errors)
    if problems:
        raise ActionError.invalid(problems)
    stored = cipher.encrypt(value) if secret else value
    with database.atomic():
        row = EnvVar.get_or_none((EnvVar.app == app.id) & (EnvVar.key == key))
        if row is None:
            row = EnvVar.create(app=app, key=key, value=stored, is_secret=secret)
        else:
            row.value, row.is_secret, row.updated_at = stored, secret, utcnow()
            row.save()
        emit(
            "v1.env.changed",
            {"app": app.slug, "app_id": app.id, "key": key, "secret": secret, "removed": False},
            actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip
    return row


def add_domain(
    *,
    actor: User | None,
    app: App,
    hostname: str,
    base_domain: str,
    redis_conn: redis.Redis | None = None,
) -> Domain:
    """Route a custom domain to an app (served with TLS after its next deploy).

    ``base_domain`` is the platform's (settings.base_domain): names under it are refused here,
    by the same rule the renderer applies, so no accepted domain can stop the app deploying.
    """
    authorize(actor, app.team, Role.ADMIN)
    hostname = _check(DomainIn, {"hostname": hostname}, base_domain=base_domain).hostname
    with database.atomic():
        if Domain.select().where(Domain.hostname == hostname).exists():
            raise ActionError("conflict", f"{hostname} is already routed to an app", "hostname")
        domain = Domain.create(app=app, hostname=hostname)
        emit(
            "v1.domain.added",
            {"app": app.slug, "app_id": app.id, "hostname": hostname},
            actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip
    return domain


def remove_domain(
    *, actor: User | None, app: App, hostname: str, redis_conn: redis.Redis | None = None
) -> None:
    """Stop routing a custom domain to an app (its route goes with the next deploy)."""
    authorize(actor, app.team, Role.ADMIN)
    hostname = hostname.strip().lower()
    with database.atomic():
        deleted = (
            Domain.delete().where((Domain.app == app.id) & (Domain.hostname == hostname)).execute()
        )
        if not deleted:
            raise ActionError("not_found", f"{hostname} is not a domain of {app.slug}", "hostname")
        emit(
            "v1.domain.removed",
            {"app": app.slug, "app_id": app.id, "hostname": hostname},
            actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip


def unset_env(
    *, actor: User | None, app: App, key: str, redis_conn: redis.Redis | None = None
) -> None:
    """Remove an environment variable or secret (the next deploy runs without it)."""
    authorize(actor, app.team, Role.ADMIN)
    with database.atomic():
        row = EnvVar.get_or_none((EnvVar.app == app.id) & (EnvVar.key == key))
        if row is None:
            raise ActionError("not_found", f"{app.slug} has no variable {key!r}", "key")
        row.delete_instance()
        emit(
            "v1.env.changed",
            {"app": app.slug, "app_id": app.id, "key": key, "secret": row.is_secret,
             "removed": True},
            actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Releases and deployments
# ---------------------------------------------------------------------------------------------


def snapshot_app(
    app: App, image: str, git_sha: str, repo_settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The configuration a new release freezes (secret values stay encrypted).

    ``repo_settings``: what the built commit's helios.toml sets; it wins over the panel for
    those keys, and the release records which values came from the file (``from_repo``).
    """
    env = {row.key: row for row in EnvVar.select().where(EnvVar.app == app.id)}
    frozen = {name: getattr(app, name) for name in release_fields()}
    extra: dict[str, Any] = {}
    if repo_settings:
        frozen.update({k: v for k, v in repo_settings.items() if k in frozen})
        extra["from_repo"] = sorted(k for k in repo_settings if k in frozen)
    return {
        "v": SNAPSHOT_VERSION,
        "slug": app.slug,
        "image": image,
        "git_sha": git_sha,
        **frozen,
        **extra,
        "env": {k: row.value for k, row in sorted(env.items()) if not row.is_secret},
        "secrets": {k: row.value for k, row in sorted(env.items()) if row.is_secret},
        "domains": sorted(d.hostname for d in Domain.select().where(Domain.app == app.id)),
    }


def preview_spec(
    app: App,
    settings: Settings,
    *,
    image: str | None = None,
    release: int | None = None,
    repo_settings: dict[str, Any] | None = None,
) -> AppSpec:
    """The AppSpec the app's next release would deploy (raises ActionError when invalid)."""
    chosen = image or app.image
    if not chosen:
        raise ActionError(
            "invalid", f"{app.slug} has no image yet: build its repository first (Deploy "
            "builds the head of its branch)", "image",
        )  # fmt: skip
    if release is None:
        last = Release.select().where(Release.app == app.id).order_by(Release.number.desc())
        release = (last.first().number + 1) if last.exists() else 1
    config = snapshot_app(app, _validated("image", validate_image, chosen), "", repo_settings)
    try:
        return spec_from_snapshot(
            config, team=app.team.slug, release=release, deployment=0, settings=settings
        )
    except ValidationError as exc:
        raise ActionError("invalid", exc.message, field=exc.field) from None


@dataclass(frozen=True)
class Requested:
    """A deployment that was recorded, whether its job reached the queue, and what the person
    who asked must know at once (``notice``: why it cannot deploy now; empty when it can)."""

    deployment: Deployment
    enqueued: bool
    notice: str = ""


def _event_data(deployment: Deployment, release: Release, app: App) -> dict[str, Any]:
    return {
        "app": app.slug,
        "app_id": app.id,
        "deployment_id": deployment.id,
        "release_id": release.id,
        "release": release.number,
    }


def _record_deployment(
    *,
    actor: User | None,
    app: App,
    release: Release,
    reason: str,
    redis_conn: redis.Redis,
    instance_count: int | None = None,
    admitted: bool = False,
) -> Deployment:
    if not admitted:  # (a new release's is admitted before the release is written)
        _admit_deployment(app, release.config or {}, instance_count)
    # Re-read within the caller's transaction, the row locked (PostgreSQL; SQLite serialises
    # writers): an app deleted since the caller loaded it (panel.actions.deletion) never gets a
    # deployment that could register its job again.
    live = App.live(App.id).where(App.id == app.id)
    if not isinstance(database.obj, pw.SqliteDatabase):
        live = live.for_update()
    if not list(live):
        raise ActionError("not_found", f"{app.slug} was deleted: there is nothing to deploy")
    if actor is None and reason in ("build", "redelivery"):
        requested_by = f"build of {release.git_sha[:12]}" if release.git_sha else "build"
    else:
        requested_by = actor_name(actor)
    deployment = Deployment.create(
        app=app, release=release, triggered_by=actor, instance_count=instance_count,
        reason=reason[:32], requested_by=requested_by[:300],
    )  # fmt: skip
    _start_stopped(actor, app, deployment, reason, redis_conn)
    older = list(
        Deployment.select(Deployment, Release)
        .join(Release)
        .where(
            (Deployment.app == app.id)
            & (Deployment.status == DeploymentStatus.QUEUED.value)
            & (Deployment.id != deployment.id)
        )
    )
    for old in older:
        old.status, old.finished_at = DeploymentStatus.SUPERSEDED.value, utcnow()
        old.status_message = f"superseded by deployment #{deployment.id} before it started"
        old.save()
        log_step(old, old.status_message, redis_conn)
        emit(
            "v1.deployment.superseded",
            {**_event_data(old, old.release, app), "by_deployment_id": deployment.id},
            actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip
    who = actor_name(actor)
    log_step(deployment, f"queued release v{release.number} ({reason or 'deploy'}), by {who}",
             redis_conn)  # fmt: skip
    emit(
        "v1.deployment.requested",
        {**_event_data(deployment, release, app), "reason": reason},
        actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
    )  # fmt: skip
    return deployment


def _admit_deployment(app: App, config: dict[str, Any], instance_count: int | None) -> None:
    """Refuse a deployment that would take the app's team past a limit: what the release runs
    becomes what the app runs, and a stopped app starts (``panel.actions.limits``)."""
    target = release_resources(config, instance_count)
    check_team_limits(app.team_id, Change(app.id, target=target, start=True))


def _start_stopped(
    actor: User | None, app: App, deployment: Deployment, reason: str, redis_conn: redis.Redis
) -> None:
    """Any deployment of a stopped app starts it again (``v1.app.started``): its job is
    registered running, so Helios must not go on calling it stopped."""
    started = (
        App.update(stopped_at=None, stopped_by="")
        .where((App.id == app.id) & App.stopped_at.is_null(False))
        .execute()
    )
    if not started:
        return
    app.stopped_at, app.stopped_by = None, ""
    emit(
        "v1.app.started",
        {"app": app.slug, "app_id": app.id, "deployment_id": deployment.id,
         "release": deployment.release.number, "reason": reason},
        actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
    )  # fmt: skip


def deploy_job_id(deployment_id: int, attempt: int = 1) -> str:
    """The RQ job id of one attempt of a deployment (each attempt has its own, so a sweep can
    tell the attempt it waits for from one that died)."""
    return f"deploy-{deployment_id}" if attempt <= 1 else f"deploy-{deployment_id}-{attempt}"


def enqueue_deploy(
    redis_conn: redis.Redis,
    deployment_id: int,
    settings: Settings | None = None,
    *,
    attempt: int = 1,
    delay: int = 0,
) -> bool:
    """Queue (after ``delay`` seconds) one attempt of a deployment's job; False (logged) when
    Redis cannot take it now. Retries are counted on the deployment row, never by RQ."""
    queue = get_queue(redis_conn, DEPLOY_QUEUE)
    options = {
        "job_id": deploy_job_id(deployment_id, attempt),
        "job_timeout": DEPLOY_JOB_TIMEOUT,
        "description": f"deploy #{deployment_id} (attempt {attempt})",
    }
    try:
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), DEPLOY_JOB, deployment_id, **options)
        else:
            queue.enqueue(DEPLOY_JOB, deployment_id, **options)
    except redis.RedisError as exc:
        # The row is the record: the worker's sweep queues it once Redis is back.
        logger.warning("deployment #%d recorded but not queued: %s", deployment_id, exc)
        return False
    return True


def enqueue_prune(redis_conn: redis.Redis, app_id: int) -> bool:
    """Queue the job that drops secrets no version of the app can run any more."""
    try:
        get_queue(redis_conn, DEPLOY_QUEUE).enqueue(
            PRUNE_JOB, app_id, job_timeout=DEPLOY_JOB_TIMEOUT, description=f"prune app #{app_id}"
        )
    except redis.RedisError as exc:  # the next deployment of the app prunes instead
        logger.warning("app #%d: secrets not pruned now: %s", app_id, exc)
        return False
    return True


def deploy_image_role(settings: Settings) -> Role:
    """The role needed to deploy an image other than the app's configured one."""
    return Role(settings.image_deploy_role)


def request_deploy(
    *,
    actor: User | None,
    app: App,
    settings: Settings,
    redis_conn: redis.Redis,
    image: str | None = None,
    git_sha: str = "",
    reason: str = "deploy",
) -> Requested:
    """Cut a release from the app's current configuration and deploy it.

    Any image other than the app's configured one receives every secret of the app, so giving
    one needs the role of HELIOS_IMAGE_DEPLOY_ROLE (admin by default), not just deployer. It
    becomes the app's image (``v1.app.updated``, in the release's transaction): the next plain
    deploy runs it too, rather than silently going back. A repo app keeps building its branch.
    """
    authorize(actor, app.team, Role.DEPLOYER)
    new_image = bool(image) and image != app.image
    if new_image:
        authorize(actor, app.team, deploy_image_role(settings))
    with database.atomic():
        deployment = cut_release(
            actor=actor, app=app, settings=settings, redis_conn=redis_conn, image=image,
            git_sha=git_sha, reason=reason,
        )  # fmt: skip
        if new_image and not app.repo:
            App.update(image=image, updated_at=utcnow()).where(App.id == app.id).execute()
            emit(
                "v1.app.updated", {"app": app.slug, "app_id": app.id, "fields": ["image"]},
                actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
            )  # fmt: skip
            app.image = image
    return _queued(deployment, redis_conn, settings)


def _queued(deployment: Deployment, redis_conn: redis.Redis, settings: Settings) -> Requested:
    """Queue a recorded deployment's job; what its requester is told."""
    enqueued = enqueue_deploy(redis_conn, deployment.id, settings)
    return Requested(deployment, enqueued, cluster_notice(settings))


def cut_release(
    *,
    actor: User | None,
    app: App,
    settings: Settings,
    redis_conn: redis.Redis,
    image: str | None,
    git_sha: str,
    reason: str,
    repo_settings: dict[str, Any] | None = None,
) -> Deployment:
    """Record a release of the app's current configuration and its queued deployment.

    Nothing is authorized or queued here: :func:`request_deploy` does both for a person, and
    a finished build (``panel.actions.builds``) records its deploy in the same transaction as
    its outcome and queues it once that committed (the worker's sweep queues it otherwise).
    """
    with database.atomic():
        # Render first: a release that could not deploy is refused before anything is queued.
        spec = preview_spec(app, settings, image=image, repo_settings=repo_settings)
        config = snapshot_app(
            app, spec.image, _validated("git_sha", validate_git_sha, git_sha), repo_settings
        )
        _admit_deployment(app, config, None)
        release = Release.create(
            app=app, number=spec.release, image=spec.image, git_sha=config["git_sha"],
            config=config, created_by=actor,
        )  # fmt: skip
        return _record_deployment(
            actor=actor, app=app, release=release, reason=reason, redis_conn=redis_conn,
            admitted=True,
        )  # fmt: skip


def request_rollback(
    *,
    actor: User | None,
    app: App,
    release_number: int,
    settings: Settings,
    redis_conn: redis.Redis,
) -> Requested:
    """Deploy an earlier release's image and settings again, as a new release.

    The new release takes the old one's image, command, resources and plain variables, but the
    app's *current* secrets and domains: a rotated secret never comes back, and a domain the app
    gave up (perhaps routed to another app since) is never claimed again by a rollback.
    """
    authorize(actor, app.team, Role.DEPLOYER)
    old = Release.get_or_none((Release.app == app.id) & (Release.number == release_number))
    if old is None:
        raise ActionError(
            "not_found", f"{app.slug} has no release {release_number}: see its release list"
        )
    with database.atomic():
        current = snapshot_app(app, old.image, old.git_sha)
        config = {
            **old.config,
            "secrets": current["secrets"],
            "domains": current["domains"],
            "rollback_of": old.number,
        }
        _admit_deployment(app, config, None)
        last = Release.select(pw.fn.MAX(Release.number)).where(Release.app == app.id).scalar()
        release = Release.create(
            app=app, number=(last or 0) + 1, image=old.image, git_sha=old.git_sha,
            config=config, created_by=actor,
        )  # fmt: skip
        deployment = _record_deployment(
            actor=actor, app=app, release=release, reason="rollback", redis_conn=redis_conn,
            admitted=True,
        )  # fmt: skip
    return _queued(deployment, redis_conn, settings)


def request_reapply(
    *, actor: User | None, app: App, settings: Settings, redis_conn: redis.Redis
) -> Requested:
    """Deploy the app's live release again, as it is (no pending setting, no new release), so
    a job changed, stopped or purged behind Helios's back converges through the usual canary
    and auto-revert path."""
    from panel.actions.drift import live_deployments

    authorize(actor, app.team, Role.DEPLOYER)
    live = live_deployments([app.id]).get(app.id)
    if live is None:
        raise ActionError(
            "conflict", f"{app.slug} has no live release to re-apply: deploy it first"
        )
    with database.atomic():
        deployment = _record_deployment(
            actor=actor, app=app, release=live.release, reason="reapply", redis_conn=redis_conn,
            instance_count=live.instance_count,
        )  # fmt: skip
    return _queued(deployment, redis_conn, settings)


@dataclass(frozen=True)
class Pending:
    """What the next deploy would change over the live release (``changes`` empty: nothing)."""

    live_release: int
    changes: list[str]


def pending_for(app: App) -> Pending | None:
    """The settings, variables, secrets and domains changed since the app's live release, one
    readable line each (secret values never shown); None before its first successful deploy.
    Reads the database only: Nomad's own plan of the same change is ``helios plan``."""
    from panel.actions.drift import live_deployments

    live = live_deployments([app.id]).get(app.id)
    if live is None:
        return None
    upcoming = snapshot_app(app, app.image or live.release.image, "")
    running = {**live.release.config, "count": live.count}  # a scale is no pending change
    changes = pending_changes(running, upcoming, compare_image=not app.repo)
    return Pending(live.release.number, changes)
