"""Deleting an app: the action (panel, API and CLI call it) and the rows its jobs write.

A deleted app stays as a *tombstone*: its ``App`` row with ``deleted_at`` set. Its name is free
at once (the slug is unique among live apps only), its domains, variables and secrets are
deleted at once (the domains are free for other apps), and its deployments, releases, builds
and logs stay readable by id for HELIOS_DELETED_APP_RETENTION_DAYS; the secret values inside
its release snapshots are dropped (their names stay), since nothing will ever deploy them. Its
audit events belong to its team and stay with the team's.

In Nomad, a job queued here (``panel.reconcile.deletion.purge_app``) stops and purges the app's
job and deletes its variable; Traefik's routes go with the job (they come from the services
Nomad registers in Consul). While Nomad is unreachable the job tries again after
HELIOS_DEPLOY_RETRY_DELAYS (the last delay repeating: a purge is never given up), and the
worker's sweep queues again a tombstone whose purge job was lost. Once purged and past the
retention period, the worker removes the tombstone and everything that cascades from it.

Deletion refuses while a deployment or a build of the app is queued or running, saying which:
nothing is cancelled behind anyone's back, and no deploy job can register the job again after
the purge.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import peewee as pw
import redis

from panel.actions.common import ActionError, actor_name, authorize
from panel.config import Settings
from panel.db import database
from panel.events import emit
from panel.models import (
    App,
    AppDrift,
    AppHealth,
    Build,
    BuildStatus,
    Deployment,
    DeploymentStatus,
    Domain,
    DomainState,
    EnvVar,
    Release,
    Role,
    User,
    utcnow,
)
from panel.queue import get_queue

__all__ = [
    "PURGE_JOB",
    "delete_app",
    "enqueue_purge",
    "expired_tombstones",
    "note_purge",
    "purge_job_id",
    "record_purged",
    "remove_tombstones",
]

logger = logging.getLogger(__name__)

PURGE_QUEUE = "deploys"
PURGE_JOB = "panel.reconcile.deletion.purge_app"
PURGE_JOB_TIMEOUT = 120  # seconds: a few Nomad calls


def _under_way(app: App) -> str | None:
    """Why the app cannot be deleted now (a deployment or build queued or running), or None."""
    busy = (DeploymentStatus.QUEUED.value, DeploymentStatus.RUNNING.value)
    deployment = (
        Deployment.select(Deployment.id, Deployment.status)
        .where((Deployment.app == app.id) & Deployment.status.in_(busy))
        .order_by(Deployment.id)
        .first()
    )
    if deployment is not None:
        return (
            f"deployment #{deployment.id} of {app.slug} is {deployment.status}: wait for it to "
            "end or cancel it, then delete the app"
        )
    building = (BuildStatus.QUEUED.value, BuildStatus.RUNNING.value)
    build = (
        Build.select(Build.number, Build.status)
        .where((Build.app == app.id) & Build.status.in_(building))
        .order_by(Build.id)
        .first()
    )
    if build is not None:
        return (
            f"build #{build.number} of {app.slug} is {build.status}: wait for it to end or "
            "cancel it, then delete the app"
        )
    return None


def _without_secret_values(config: dict) -> dict:
    """A release snapshot with its secrets' encrypted values dropped (their names kept)."""
    secrets = config.get("secrets")
    if not secrets:
        return config
    return {**config, "secrets": dict.fromkeys(secrets, "")}


def delete_app(
    *,
    actor: User | None,
    app: App,
    confirm: str,
    settings: Settings,
    redis_conn: redis.Redis | None = None,
) -> App:
    """Delete an app (team admin or owner); ``confirm`` must be the app's name, typed.

    Returns the tombstone. Refused (``conflict``) while a deployment or build is under way,
    saying which; nothing is cancelled silently. Its Nomad job is purged by a queued job
    (see the module's docstring), so this never waits on Nomad.
    """
    authorize(actor, app.team, Role.ADMIN)
    if app.deleted_at is not None:
        raise ActionError("not_found", f"no app named {app.slug!r}")
    typed = (confirm or "").strip()
    if typed != app.slug:
        raise ActionError(
            "invalid",
            f"type the app's name, {app.slug}, to confirm deleting it"
            + (f" (got {typed[:63]!r})" if typed else ""),
            "confirm",
        )
    who = actor_name(actor)
    with database.atomic():
        # Marked first: a concurrent request that committed before this write is seen below
        # (SQLite serialises writers; PostgreSQL locks the row).
        marked = (
            App.update(deleted_at=utcnow(), deleted_by=who[:300], webhook_secret=None)
            .where((App.id == app.id) & App.deleted_at.is_null())
            .execute()
        )
        if not marked:
            raise ActionError("not_found", f"no app named {app.slug!r}")
        reason = _under_way(app)
        if reason:
            raise ActionError("conflict", reason)  # leaving the block rolls the mark back
        Domain.delete().where(Domain.app == app.id).execute()
        DomainState.delete().where(DomainState.app == app.id).execute()
        EnvVar.delete().where(EnvVar.app == app.id).execute()
        AppHealth.delete().where(AppHealth.app == app.id).execute()
        AppDrift.delete().where(AppDrift.app == app.id).execute()
        for release in list(
            Release.select(Release.id, Release.config).where(Release.app == app.id)
        ):
            config = _without_secret_values(release.config or {})
            if config != release.config:
                Release.update(config=config).where(Release.id == release.id).execute()
        emit(
            "v1.app.deleted",
            {"app": app.slug, "app_id": app.id, "team": app.team.slug, "by": who[:300],
             "retention_days": settings.deleted_app_retention_days},
            actor=who, team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip
    if redis_conn is not None:
        enqueue_purge(redis_conn, app.id)  # else the worker's sweep queues it
    return App.get_by_id(app.id)


# ---------------------------------------------------------------------------------------------
# The purge job's bookkeeping (panel.reconcile.deletion does the Nomad calls)
# ---------------------------------------------------------------------------------------------


def purge_job_id(app_id: int, attempt: int = 1) -> str:
    """The RQ job id of one attempt at purging a deleted app (one per attempt, as deploys)."""
    return f"delete-app-{app_id}" if attempt <= 1 else f"delete-app-{app_id}-{attempt}"


def enqueue_purge(
    redis_conn: redis.Redis, app_id: int, *, attempt: int = 1, delay: int = 0
) -> bool:
    """Queue (after ``delay`` seconds) one attempt at purging a deleted app's Nomad job and
    variable; False (logged) when Redis cannot take it now (the worker's sweep will)."""
    queue = get_queue(redis_conn, PURGE_QUEUE)
    options = {
        "job_id": purge_job_id(app_id, attempt),
        "job_timeout": PURGE_JOB_TIMEOUT,
        "description": f"purge deleted app #{app_id} from Nomad (attempt {attempt})",
    }
    try:
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), PURGE_JOB, app_id, **options)
        else:
            queue.enqueue(PURGE_JOB, app_id, **options)
    except redis.RedisError as exc:
        logger.warning("deleted app #%d: purge not queued now: %s", app_id, exc)
        return False
    return True


def note_purge(app_id: int, note: str, *, attempt: bool = False) -> int:
    """Say on the tombstone how its purge goes (counting an attempt if ``attempt``); the
    number of attempts so far."""
    changes: dict = {App.purge_note: note[:2000]}
    if attempt:
        changes[App.purge_attempts] = App.purge_attempts + 1
    App.update(changes).where(App.id == app_id).execute()
    return App.select(App.purge_attempts).where(App.id == app_id).scalar() or 0


def record_purged(app_id: int, note: str) -> None:
    """The tombstone's job and variable are gone from Nomad."""
    App.update(purged_at=utcnow(), purge_note=note[:2000]).where(App.id == app_id).execute()


# ---------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------


def expired_tombstones(before: datetime) -> pw.ModelSelect:
    """Tombstones deleted before ``before`` whose purge finished (an unpurged one is kept: its
    row is what the sweep retries from)."""
    return App.select(App.id, App.slug).where(
        (App.deleted_at < before) & App.purged_at.is_null(False)
    )


def remove_tombstones(before: datetime) -> list[str]:
    """Remove the expired tombstones and everything that cascades from them (deployments,
    releases, builds and their logs, app logs, metrics); the names removed. Audit events
    stay (they belong to the team, not the app)."""
    removed = []
    for tombstone in list(expired_tombstones(before)):
        with database.atomic():
            App.delete().where((App.id == tombstone.id) & App.deleted_at.is_null(False)).execute()
        removed.append(f"{tombstone.slug} (#{tombstone.id})")
    return removed
