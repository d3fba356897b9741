"""Everyday actions on a running app: scale it, restart it, stop it and start it again.

- **Scale** sets how many instances run without a new release: ``App.count`` (so the next
  release keeps it) and the live deployment's ``instance_count`` (so the drift check and a
  restart render the count that runs), then a queued job asks Nomad's scale endpoint
  (``panel.reconcile.lifecycle.apply_lifecycle``). ``v1.app.scaled`` says from how many to how
  many.
- **Restart** is a deployment of the live release again (reason ``restart``): its new
  ``helios.deployment`` meta makes Nomad replace every allocation through the job's update
  block, canaries first, so the app stays up, and the follower, auto-revert and the history
  treat it as any deployment (``v1.deployment.requested``).
- **Stop** marks the app stopped (``v1.app.stopped``) and a queued job stops its Nomad job
  (deregistered, not purged: its versions stay readable). A stopped app is no drift, and its
  health says it was stopped.
- **Start** is a deployment of the live release (reason ``start``); any deployment of a stopped
  app starts it (``v1.app.started``, see ``panel.actions.apps``).

Each needs the deployer role, as deploying does. Scale, restart and stop refuse while a
deployment of the app is queued or running (saying which): its job registers its own count,
Nomad refuses to scale a job whose deployment runs, and a restart must not supersede a queued
deploy of a newer release.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis

from panel.actions.apps import Requested, _queued, _record_deployment
from panel.actions.common import ActionError, FieldError, actor_name, authorize
from panel.actions.drift import live_deployments
from panel.actions.limits import Change, Resources, check_team_limits, release_resources
from panel.config import Settings
from panel.db import database
from panel.events import emit
from panel.models import App, Deployment, DeploymentStatus, Role, User, utcnow
from panel.queue import get_queue
from panel.schema.apps import ScaleIn
from panel.schema.base import Problems, check

__all__ = [
    "LIFECYCLE_JOB",
    "enqueue_lifecycle",
    "lifecycle_job_id",
    "restart_app",
    "scale_app",
    "start_app",
    "stop_app",
]

logger = logging.getLogger(__name__)

LIFECYCLE_QUEUE = "deploys"
LIFECYCLE_JOB = "panel.reconcile.lifecycle.apply_lifecycle"
LIFECYCLE_JOB_TIMEOUT = 600  # seconds: waiting for the app's lock, then two Nomad calls
_BUSY = (DeploymentStatus.QUEUED.value, DeploymentStatus.RUNNING.value)


def _deploying(app: App, doing: str) -> None:
    """Raise ``conflict`` while a deployment of the app is queued or running, naming it."""
    busy = (
        Deployment.select(Deployment.id, Deployment.status)
        .where((Deployment.app == app.id) & Deployment.status.in_(_BUSY))
        .order_by(Deployment.id)
        .first()
    )
    if busy is not None:
        raise ActionError(
            "conflict",
            f"deployment #{busy.id} of {app.slug} is {busy.status}: wait for it to end or "
            f"cancel it, then {doing}",
        )


def _live(app: App, doing: str) -> Deployment:
    """The app's live deployment, or ``conflict`` when it never ran (or was deleted)."""
    if app.deleted_at is not None:
        raise ActionError("not_found", f"no app named {app.slug!r}")
    live = live_deployments([app.id]).get(app.id)
    if live is None:
        raise ActionError("conflict", f"{app.slug} has no live release to {doing}: deploy it first")
    return live


def _checked_count(count: object) -> int:
    try:
        return check(ScaleIn, {"count": count}).count
    except Problems as exc:
        raise ActionError.invalid([FieldError(p.field, p.message) for p in exc.problems]) from None


# ---------------------------------------------------------------------------------------------
# Scale
# ---------------------------------------------------------------------------------------------


def scale_app(
    *, actor: User | None, app: App, count: object, redis_conn: redis.Redis | None = None
) -> App:
    """Run ``count`` instances of the app (deployer), without a new release; the app again.

    Nothing changes (no event, no job) when it runs that many already. A stopped app keeps the
    count for when it starts.
    """
    authorize(actor, app.team, Role.DEPLOYER)
    wanted = _checked_count(count)
    with database.atomic():
        live = _live(app, "scale")
        _deploying(app, "scale it")
        before = live.count
        if before == wanted and app.count == wanted:
            return app
        if not app.is_stopped:  # a stopped app uses nothing: starting it is checked
            check_team_limits(
                app.team_id,
                Change(
                    app.id,
                    settings=Resources(wanted, app.cpu_mhz, app.memory_mb),
                    target=release_resources(live.release.config or {}, wanted),
                ),
            )
        App.update(count=wanted, updated_at=utcnow()).where(App.id == app.id).execute()
        Deployment.update(instance_count=wanted).where(Deployment.id == live.id).execute()
        if before == wanted:  # only the setting differed (changed for the next deploy)
            emit(
                "v1.app.updated", {"app": app.slug, "app_id": app.id, "fields": ["count"]},
                actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
            )  # fmt: skip
            app.count = wanted
            return app
        emit(
            "v1.app.scaled",
            {"app": app.slug, "app_id": app.id, "from": before, "to": wanted,
             "deployment_id": live.id, "release": live.release.number},
            actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip
    app.count = wanted
    if redis_conn is not None and not app.is_stopped:
        enqueue_lifecycle(redis_conn, app.id)
    return app


# ---------------------------------------------------------------------------------------------
# Restart and start: deployments of the live release
# ---------------------------------------------------------------------------------------------


def _redeploy(
    actor: User | None, app: App, reason: str, settings: Settings, redis_conn: redis.Redis
) -> Requested:
    live = _live(app, reason)
    with database.atomic():
        deployment = _record_deployment(
            actor=actor, app=app, release=live.release, reason=reason, redis_conn=redis_conn,
            instance_count=live.instance_count,
        )  # fmt: skip
    return _queued(deployment, redis_conn, settings)


def restart_app(
    *, actor: User | None, app: App, settings: Settings, redis_conn: redis.Redis
) -> Requested:
    """Replace every instance of the app, a few at a time, with the live release (deployer).

    A deployment of the live release (reason ``restart``): canaries start and pass their checks
    before old instances stop, so the app stays up; no new release, no pending setting.
    """
    authorize(actor, app.team, Role.DEPLOYER)
    if app.is_stopped:
        raise ActionError(
            "conflict", f"{app.slug} is stopped: start it instead (it starts fresh instances)"
        )
    _deploying(app, "restart it (a deployment replaces every instance anyway)")
    return _redeploy(actor, app, "restart", settings, redis_conn)


def start_app(
    *, actor: User | None, app: App, settings: Settings, redis_conn: redis.Redis
) -> Requested:
    """Start a stopped app again with its live release (deployer): a deployment (reason
    ``start``) that registers its job running."""
    authorize(actor, app.team, Role.DEPLOYER)
    if not app.is_stopped:
        raise ActionError(
            "conflict", f"{app.slug} is not stopped: restart it to replace its instances"
        )
    return _redeploy(actor, app, "start", settings, redis_conn)


# ---------------------------------------------------------------------------------------------
# Stop
# ---------------------------------------------------------------------------------------------


def stop_app(*, actor: User | None, app: App, redis_conn: redis.Redis | None = None) -> App:
    """Stop every instance of the app (deployer): its Nomad job is stopped, not purged, by a
    queued job; its settings, releases and domains stay, and Start brings it back."""
    authorize(actor, app.team, Role.DEPLOYER)
    who = actor_name(actor)
    with database.atomic():
        live = _live(app, "stop")
        marked = (
            App.update(stopped_at=utcnow(), stopped_by=who[:300])
            .where((App.id == app.id) & App.stopped_at.is_null() & App.deleted_at.is_null())
            .execute()
        )
        if not marked:
            raise ActionError("conflict", f"{app.slug} is stopped already: start it to run it")
        _deploying(app, "stop it")  # raising rolls the mark back
        emit(
            "v1.app.stopped",
            {"app": app.slug, "app_id": app.id, "by": who[:300],
             "release": live.release.number},
            actor=who, team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip
    if redis_conn is not None:
        enqueue_lifecycle(redis_conn, app.id)
    return App.get_by_id(app.id)


# ---------------------------------------------------------------------------------------------
# The job that brings Nomad's job to the app's count or stopped state
# ---------------------------------------------------------------------------------------------


def lifecycle_job_id(app_id: int, attempt: int = 1) -> str:
    """The RQ job id of one attempt at applying an app's count or stop to Nomad."""
    return f"lifecycle-{app_id}" if attempt <= 1 else f"lifecycle-{app_id}-{attempt}"


def enqueue_lifecycle(
    redis_conn: redis.Redis, app_id: int, *, attempt: int = 1, delay: int = 0
) -> bool:
    """Queue (after ``delay`` seconds) the job that applies the app's count or stop to Nomad;
    False (logged) when Redis cannot take it now."""
    queue = get_queue(redis_conn, LIFECYCLE_QUEUE)
    options = {
        "job_id": lifecycle_job_id(app_id, attempt),
        "job_timeout": LIFECYCLE_JOB_TIMEOUT,
        "description": f"apply the count or stop of app #{app_id} (attempt {attempt})",
    }
    try:
        if delay > 0:
            queue.enqueue_in(
                timedelta(seconds=delay), LIFECYCLE_JOB, app_id, attempt=attempt, **options
            )
        else:
            queue.enqueue(LIFECYCLE_JOB, app_id, attempt=attempt, **options)
    except redis.RedisError as exc:
        logger.warning("app #%d: count or stop not queued now: %s", app_id, exc)
        return False
    return True
