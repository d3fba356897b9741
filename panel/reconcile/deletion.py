"""RQ entry point and sweeps of app deletion (the action is ``panel.actions.deletion``).

``purge_app(app_id)`` stops and purges a deleted app's Nomad job and deletes its Nomad
Variable, holding the app's deploy lock; it is idempotent (a job or variable already gone is
fine) and records how it went on the tombstone (``purge_note``, ``purged_at``). While Nomad is
unreachable or failing it queues itself again after HELIOS_DEPLOY_RETRY_DELAYS, the last delay
repeating: a purge is never given up, and every try says why on the tombstone.

The name is free as soon as the app is deleted, so a new app may take it (and its job id and
variable path) before the purge runs. The purge therefore removes a job only if it is the
deleted app's own (its ``Meta["helios.deployment"]`` is a deployment of the tombstone, or it
has none and no live app has the name), and the variable only if no live app has the name
(a new app's deploys own it then, and its pruning drops the old releases' items).

:func:`resume_deletions` runs in every worker's maintenance: it queues again the purge of a
tombstone whose job was lost (Redis flushed, a worker killed), and once an hour removes the
tombstones older than HELIOS_DELETED_APP_RETENTION_DAYS.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import peewee as pw
import redis
from rq import get_current_job
from rq.job import JobStatus

from panel.actions.deletion import (
    enqueue_purge,
    note_purge,
    purge_job_id,
    record_purged,
    remove_tombstones,
)
from panel.config import Settings
from panel.db import database
from panel.drivers.nomad import NomadDriver, NomadError, nomad_configured
from panel.models import App, Deployment, utcnow
from panel.namespaces import app_namespaces
from panel.queue import connect_redis
from panel.reconcile.jobs import _WAITING, _change_variable, _holding, job_status
from panel.render.nomad import variable_path_for

__all__ = ["PRUNE_TOMBSTONES_LOCK", "purge_app", "resume_deletions", "sweep_deletions"]

logger = logging.getLogger(__name__)

PRUNE_TOMBSTONES_LOCK = "helios:prune:tombstones"  # one worker removes tombstones, hourly
SWEEP_AFTER = 30  # seconds a tombstone may wait for its purge job before it is queued again


def _owns(job: dict[str, Any], app: App) -> bool:
    """Whether the job in Nomad is the deleted app's (not a new app's of the same name)."""
    mine = str((job.get("Meta") or {}).get("helios.deployment", ""))
    if mine.isdigit():
        return (
            Deployment.select()
            .where((Deployment.id == int(mine)) & (Deployment.app == app.id))
            .exists()
        )
    return not App.live().where(App.slug == app.slug).exists()


def _purge(driver: NomadDriver, app: App) -> str:
    """Purge the job and delete the variable (what is the app's own); what was done."""
    done = []
    job = driver.read_job(app.slug)
    if job is None:
        done.append(f"no job {app.slug!r} in Nomad")
    elif _owns(job, app):
        driver.purge_job(app.slug)
        done.append(f"job {app.slug!r} stopped and purged")
    else:
        done.append(f"job {app.slug!r} now belongs to the new app {app.slug}: left alone")
    if App.live().where(App.slug == app.slug).exists():
        done.append("its variable left to the new app of the same name")
    elif _change_variable(driver, variable_path_for(app.slug), lambda _items: {}):
        done.append("its variable deleted")
    else:
        done.append("no variable to delete")
    return "; ".join(done)


def purge_app(app_id: int) -> str:
    """Stop and purge a deleted app's Nomad job and variable; idempotent (see the module)."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    app = App.get_or_none(App.id == app_id)
    if app is None or app.deleted_at is None:
        return "missing"
    if app.purged_at is not None:
        return "purged"
    if not nomad_configured(settings):
        record_purged(app.id, "no Nomad cluster is connected (NOMAD_ADDR is empty): nothing ran")
        return "purged"
    with _holding(redis_conn, app.id, settings) as held:
        if not held:
            return _retry(app, redis_conn, settings, "another run held the app's lock")
        try:
            # In every namespace it ran in (its team's now, and any before a move).
            outcome = "; ".join(
                _purge(NomadDriver.for_namespace(settings, namespace), app)
                for namespace in app_namespaces(app, settings)
            )
        except NomadError as exc:
            return _retry(app, redis_conn, settings, str(exc))
    record_purged(app.id, outcome)
    logger.info("deleted app %s (#%d): %s", app.slug, app.id, outcome)
    return "purged"


def _retry(app: App, redis_conn: redis.Redis, settings: Settings, why: str) -> str:
    """Count the attempt on the tombstone and queue the next one (never given up)."""
    attempts = note_purge(app.id, why, attempt=True)
    delays = settings.deploy_retry_delays
    delay = delays[min(attempts, len(delays)) - 1]
    note_purge(app.id, f"{why} — trying again in {delay} s (attempt {attempts + 1})")
    logger.warning("deleted app %s (#%d) not purged yet: %s", app.slug, app.id, why)
    enqueue_purge(redis_conn, app.id, attempt=attempts + 1, delay=delay)
    return "retrying"


def sweep_deletions(redis_conn: redis.Redis) -> list[int]:
    """Queue again the purge of tombstones whose purge job neither waits nor runs; their ids."""
    since = utcnow() - timedelta(seconds=SWEEP_AFTER)
    unpurged = list(
        App.select(App.id, App.purge_attempts).where(
            App.deleted_at.is_null(False) & App.purged_at.is_null() & (App.deleted_at < since)
        )
    )
    queued = []
    for app in unpurged:
        attempt = app.purge_attempts + 1
        status = job_status(redis_conn, purge_job_id(app.id, attempt))
        if status in _WAITING or status == JobStatus.STARTED:
            continue
        if enqueue_purge(redis_conn, app.id, attempt=attempt):
            queued.append(app.id)
    return queued


def resume_deletions(connection: redis.Redis, settings: Settings) -> dict[str, list]:
    """The worker's share of deletion (never raises): lost purges queued again; hourly, the
    tombstones past HELIOS_DELETED_APP_RETENTION_DAYS removed."""
    done: dict[str, list] = {"queued": [], "removed": []}
    try:
        with database.connection_context():
            done["queued"] = sweep_deletions(connection)
            if connection.set(PRUNE_TOMBSTONES_LOCK, os.getpid(), nx=True, ex=3600):
                before = utcnow() - timedelta(days=settings.deleted_app_retention_days)
                done["removed"] = remove_tombstones(before)
    except (pw.PeeweeException, redis.RedisError) as exc:
        logger.warning("could not sweep deleted apps now: %s", exc)
        return done
    if done["removed"]:
        logger.info("removed deleted apps past %d days: %s",
                    settings.deleted_app_retention_days, ", ".join(done["removed"]))  # fmt: skip
    return done
