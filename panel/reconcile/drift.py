"""Drift: each app's job in Nomad against the job of its live release, on a schedule.

The job Helios "would render now" is the live deployment's (the last that succeeded), rendered
exactly as the deploy engine rendered it (:func:`panel.reconcile.jobs.render_deployment`), not
the app's unsaved settings. Nomad itself compares the two: its plan of that body, with the
diff, is what ``nomad job plan`` prints, and a diff of type ``None`` means no change whatever
defaults Nomad filled in. A missing job (404) and a stopped one (``Stop``) are told apart
first; for an app a person stopped (``panel.actions.lifecycle``) they are what is wanted. A
scaled app's live deployment renders the count it was scaled to. Apps with a deployment queued
or running are skipped: their job is meant to change.

Checking changes nothing in Nomad; re-applying is a deployment a person or an API call asks
for (:func:`panel.actions.apps.request_reapply`). The worker's maintenance queues one check
pass every HELIOS_DRIFT_INTERVAL seconds across all workers (:func:`schedule_drift_check`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Iterable

import redis
from redis.exceptions import LockError
from rq import get_current_job

from panel.actions.drift import (
    DriftState,
    Finding,
    busy_apps,
    drift_rows,
    live_deployments,
    record_drift,
    touch_checked,
)
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.drivers.nomad import NomadDriver, NomadError, NomadErrorKind, nomad_configured
from panel.logs.runtime import deployment_scrubber
from panel.models import Deployment
from panel.namespaces import recorded_namespace
from panel.queue import connect_redis, get_queue
from panel.reconcile.jobs import render_deployment
from panel.reconcile.plan import format_plan
from panel.validation import ValidationError

__all__ = ["check_app", "check_apps", "check_drift", "schedule_drift_check"]

logger = logging.getLogger(__name__)

DRIFT_JOB = "panel.reconcile.drift.check_drift"
SCHEDULE_LOCK = "helios:drift:scheduled"  # set for HELIOS_DRIFT_INTERVAL seconds per pass
RUNNING_LOCK = "helios:drift:pass"  # held while a pass runs: passes never overlap
RUNNING_LOCK_TTL = 3600  # seconds; a killed pass's lock expires
DRIFT_JOB_TIMEOUT = 3600  # seconds one pass may take (two Nomad calls per app)
_NO_SECRETS_MASKED = "[diff withheld: the app's secrets could not be read to mask them]"


# ---------------------------------------------------------------------------------------------
# One app
# ---------------------------------------------------------------------------------------------


def _compare(driver: NomadDriver, deployment: Deployment, settings: Settings) -> Finding:
    slug = deployment.app.slug
    driver = driver.in_namespace(recorded_namespace(deployment, settings))
    job = driver.read_job(slug)
    if deployment.app.stopped_at is not None:  # stopped by a person: no job running is right
        if job is None or job.get("Stop"):
            return Finding(DriftState.IN_SYNC)
        return Finding(
            DriftState.DRIFTED,
            f'{slug} was stopped in Helios but job "{slug}" runs in Nomad: stop it again, or '
            "start it",
        )
    if job is None:
        return Finding(DriftState.MISSING, f'Job "{slug}" is not in Nomad (it was purged).')
    if job.get("Stop"):
        return Finding(
            DriftState.STOPPED,
            f'Job "{slug}" is stopped in Nomad (version {job.get("Version")}); '
            "its allocations are stopped.",
        )
    plan = driver.plan_job(slug, render_deployment(deployment, settings))
    if ((plan.get("Diff") or {}).get("Type") or "None") == "None":
        return Finding(DriftState.IN_SYNC)
    return Finding(DriftState.DRIFTED, "\n".join(format_plan(plan)))


def _scrubbed(finding: Finding, deployment: Deployment, settings: Settings) -> Finding:
    """The finding with every secret of the release (and the app's current ones) masked: a
    job's diff shows its variables and templates."""
    if not finding.diff:
        return finding
    try:
        scrubber = deployment_scrubber(
            deployment.app, deployment, SecretCipher.from_settings(settings)
        )
    except SecretKeyError:
        return Finding(finding.state, _NO_SECRETS_MASKED)
    return Finding(finding.state, scrubber.scrub(finding.diff))


def check_app(driver: NomadDriver, deployment: Deployment, settings: Settings) -> Finding:
    """How the app's job in Nomad compares with its live deployment's; raises NomadError only
    when Nomad is unreachable (the whole pass stops then)."""
    try:
        finding = _compare(driver, deployment, settings)
    except NomadError as exc:
        if exc.kind == NomadErrorKind.UNREACHABLE:
            raise
        finding = Finding(DriftState.UNKNOWN, f"Nomad did not answer the check: {exc}")
    except ValidationError as exc:
        finding = Finding(DriftState.UNKNOWN, f"the live release no longer renders: {exc}")
    return _scrubbed(finding, deployment, settings)


# ---------------------------------------------------------------------------------------------
# A pass over every app
# ---------------------------------------------------------------------------------------------


def check_apps(
    driver: NomadDriver,
    settings: Settings,
    redis_conn: redis.Redis | None,
    app_ids: Iterable[int] | None = None,
) -> Counter[str]:
    """Check every app with a live release (or those of ``app_ids``) and record what changed;
    how many apps ended in each state (``busy``: skipped, a deployment is under way)."""
    ids = list(app_ids) if app_ids is not None else None
    live, busy = live_deployments(ids), busy_apps(ids)
    stored = drift_rows(live)
    counts: Counter[str] = Counter()
    unchanged = []
    for app_id in sorted(live):
        deployment = live[app_id]
        if app_id in busy:
            counts["busy"] += 1
            continue
        finding = check_app(driver, deployment, settings)
        row = stored.get(app_id)
        seen = (finding.state, finding.diff, deployment.id)
        if row is not None and (row.state, row.diff, row.deployment_id) == seen:
            unchanged.append(app_id)
        elif finding.state != DriftState.IN_SYNC and _moved_on(app_id, deployment):
            counts["busy"] += 1  # a deployment started meanwhile: its job is meant to differ
            continue
        else:
            record_drift(deployment, finding, redis_conn)
        counts[finding.state.value] += 1
    touch_checked(unchanged)
    return counts


def _moved_on(app_id: int, deployment: Deployment) -> bool:
    """A deployment of the app started, or another became live, since the pass began."""
    if busy_apps([app_id]):
        return True
    now = live_deployments([app_id]).get(app_id)
    return now is None or now.id != deployment.id


def check_drift() -> str:
    """RQ job: one drift pass over every app (never two at once); a summary of the states."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    if not nomad_configured(settings):
        return "no Nomad cluster configured"
    lock = redis_conn.lock(RUNNING_LOCK, timeout=RUNNING_LOCK_TTL)
    if not lock.acquire(blocking=False):
        return "another pass is running"
    try:
        counts = check_apps(NomadDriver.from_settings(settings), settings, redis_conn)
    except NomadError as exc:
        logger.warning("drift check stopped: %s", exc)
        return f"stopped: {exc}"
    finally:
        with contextlib.suppress(LockError, redis.RedisError):
            lock.release()
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no live apps"
    if counts["drifted"] or counts["missing"] or counts["stopped"]:
        logger.info("drift check: %s", summary)
    return summary


def _drift_queue(settings: Settings) -> str:
    return "default" if "default" in settings.queues else settings.queues[-1]


def schedule_drift_check(connection: redis.Redis, settings: Settings) -> bool:
    """From the worker's maintenance: queue a drift pass once per HELIOS_DRIFT_INTERVAL across
    all workers (0: never); True when this call queued one. Never raises."""
    if not settings.drift_interval or not nomad_configured(settings):
        return False
    try:
        if not connection.set(SCHEDULE_LOCK, os.getpid(), nx=True, ex=settings.drift_interval):
            return False
        get_queue(connection, _drift_queue(settings)).enqueue(
            DRIFT_JOB, job_timeout=DRIFT_JOB_TIMEOUT, description="drift check of every app"
        )
    except redis.RedisError as exc:
        logger.warning("could not queue the drift check now: %s", exc)
        return False
    return True
