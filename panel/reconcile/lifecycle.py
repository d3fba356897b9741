"""RQ entry point of scale and stop (the actions are ``panel.actions.lifecycle``).

``apply_lifecycle(app_id)`` brings the app's Nomad job to what Helios wants of it now, holding
the app's deploy lock: a stopped app's job stopped (deregistered, not purged); a running app's
web group at its live deployment's count (Nomad's scale endpoint). It re-reads the rows, so a
repeated or late run is harmless: one queued for a scale that a stop followed stops the job,
and it does nothing while a deployment of the app is under way (that deployment registers its
own count). While Nomad is unreachable, or refuses to scale while a deployment of the job runs
(an earlier scale's), it queues itself again after HELIOS_DEPLOY_RETRY_DELAYS, and gives up
(logged) after as many attempts as a deployment gets.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from rq import get_current_job

from panel.actions.drift import busy_apps, live_deployments
from panel.actions.lifecycle import enqueue_lifecycle
from panel.config import Settings
from panel.drivers.nomad import NomadDriver, NomadError, nomad_configured
from panel.models import App
from panel.namespaces import app_driver
from panel.queue import connect_redis
from panel.reconcile.jobs import _holding, max_attempts
from panel.spec import WEB

__all__ = ["apply_lifecycle", "converge_lifecycle"]

logger = logging.getLogger(__name__)

ACTIVE_DEPLOYMENT = "blocked due to active deployment"  # Nomad's Job.Scale refusal


def _web_count(job: dict[str, Any]) -> int | None:
    group = next((g for g in job.get("TaskGroups") or [] if g.get("Name") == WEB), None)
    return None if group is None else group.get("Count")


def converge_lifecycle(driver: NomadDriver, app: App) -> str:
    """Stop the app's job, or scale its web group, as the app's rows want; what was done."""
    job = driver.read_job(app.slug)
    if app.stopped_at is not None:
        if job is None or job.get("Stop"):
            return "stopped already"
        driver.stop_job(app.slug)
        return "stopped"
    if busy_apps([app.id]):
        return "a deployment is under way: it registers its own count"
    live = live_deployments([app.id]).get(app.id)
    if live is None or job is None or job.get("Stop"):
        return "nothing runs to scale"
    count = live.count
    if _web_count(job) == count:
        return f"runs {count} already"
    driver.scale_job(app.slug, WEB, count, message=f"scaled to {count} by Helios")
    return f"scaled to {count}"


def apply_lifecycle(app_id: int, attempt: int = 1) -> str:
    """RQ job: apply the app's count or stop to its Nomad job; idempotent (see the module)."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    app = App.get_or_none(App.id == app_id)
    if app is None or app.deleted_at is not None:
        return "missing"
    if not nomad_configured(settings):
        return "no Nomad cluster is connected (NOMAD_ADDR is empty)"
    with _holding(redis_conn, app.id, settings) as held:
        if not held:
            return _again(app, attempt, redis_conn, settings, "another run held the app's lock")
        try:
            app = App.get_by_id(app_id)
            done = converge_lifecycle(app_driver(settings, app), app)
        except NomadError as exc:
            # Nomad refuses to scale while a deployment of the job runs (an earlier scale's
            # among them): that ends by itself, so it is tried again like an outage.
            if not exc.retryable and ACTIVE_DEPLOYMENT not in str(exc):
                logger.warning("app %s: count or stop not applied: %s", app.slug, exc)
                return f"failed: {exc}"
            return _again(app, attempt, redis_conn, settings, str(exc))
    logger.info("app %s: %s", app.slug, done)
    return done


def _again(app: App, attempt: int, redis_conn: redis.Redis, settings: Settings, why: str) -> str:
    """Queue the next attempt after the retry delay, or give up after the last one."""
    most = max_attempts(settings)
    if attempt >= most:
        logger.warning("app %s: count or stop not applied after %d attempts: %s",
                       app.slug, attempt, why)  # fmt: skip
        return f"gave up: {why}"
    delay = settings.deploy_retry_delays[attempt - 1]
    logger.warning("app %s: count or stop not applied yet (%s); again in %d s",
                   app.slug, why, delay)  # fmt: skip
    enqueue_lifecycle(redis_conn, app.id, attempt=attempt + 1, delay=delay)
    return "retrying"
