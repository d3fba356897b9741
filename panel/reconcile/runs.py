"""RQ entry point of one-off runs. The job takes an id, re-reads the rows, and is safe to run
again.

``start_run(run_id)`` is short: render the run's batch job from its release
(``panel.render.run``), write the release's secrets into the run's own Nomad Variable (the only
one its task may read besides the app's, which it may not), ask Nomad to validate the job,
register it, and hand the run to the follower (``panel.follow.runs``), which follows its
allocation to the end. The job ID is ``<app>-run-<id>``, so a re-run after a crash finds the job
it registered (same ID, same run in its Meta) instead of registering a second one. A one-off is
not retried: when Nomad refuses or cannot be reached, the run fails with the reason.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import redis
from rq import get_current_job
from rq.job import JobStatus

from panel.actions.runs import (
    RUN_JOB_TIMEOUT,
    RunEnd,
    claim_run,
    enqueue_run,
    finish_run,
    record_run_submitted,
    run_job_rq_id,
)
from panel.actions.team_namespace import record_job_namespace
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.drivers.nomad import NomadDriver, NomadError, NomadErrorKind, nomad_configured
from panel.models import OneOffRun, RunStatus, utcnow
from panel.namespaces import ensure_namespace
from panel.queue import connect_redis
from panel.reconcile.jobs import job_status
from panel.releases import spec_from_snapshot
from panel.render.run import render_run_job, render_run_variables, run_job_id, run_variable_path
from panel.validation import ValidationError

__all__ = ["drop_run_secrets", "start_run", "sweep_runs"]

logger = logging.getLogger(__name__)

REQUEUE_AFTER = 10  # seconds a queued run may lack its job before it is queued again
_ALIVE = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.STARTED}


def _fail(run_id: int, message: str, redis_conn: redis.Redis) -> str:
    finish_run(run_id, RunEnd(RunStatus.FAILED, message), redis_conn=redis_conn)
    return OneOffRun.get_by_id(run_id).status


def _register(run: OneOffRun, settings: Settings, redis_conn: redis.Redis) -> str:
    release, app = run.release, run.app
    spec = spec_from_snapshot(
        release.config, team=app.team.slug, release=release.number, deployment=0,
        settings=settings,
    )  # fmt: skip
    cipher = SecretCipher.from_settings(settings)
    stored = release.config.get("secrets", {})
    secrets = {key: cipher.decrypt(value) for key, value in stored.items()}
    body = render_run_job(
        spec, run_id=run.id, command=list(run.command), requested_by=run.requested_by_name
    )
    job_id = run_job_id(app.slug, run.id)
    namespace = run.nomad_namespace or ensure_namespace(settings, app.team)
    record_job_namespace(run, namespace)
    driver = NomadDriver.for_namespace(settings, namespace)
    existing = driver.read_job(job_id)
    if existing is not None:
        if (existing.get("Meta") or {}).get("helios.run") != str(run.id):
            return _fail(run.id, f"Nomad already has a job {job_id!r} of another run: stop "
                         "and purge it, then run the command again", redis_conn)  # fmt: skip
        record_run_submitted(run, job_id, redis_conn)
        return "following"  # registered by an earlier attempt that died before recording it
    if secrets:
        _write_secrets(driver, run_variable_path(job_id), render_run_variables(spec, secrets))
    problems = driver.validate_job(body)
    if problems:
        drop_run_secrets(driver, job_id)
        return _fail(run.id, "Nomad refused the run's job: " + "; ".join(problems), redis_conn)
    try:
        driver.register_job(job_id, body, modify_index=0)
    except NomadError as exc:
        if exc.kind != NomadErrorKind.CONFLICT:
            raise
        # Another attempt registered it meanwhile: that one is the run's.
    record_run_submitted(run, job_id, redis_conn)
    return "registered"


def _write_secrets(driver: NomadDriver, path: str, items: dict[str, str]) -> None:
    current = driver.read_variable(path)
    cas = int(current.get("ModifyIndex", 0)) if current else 0
    driver.write_variable(path, items, cas=cas)


def drop_run_secrets(driver: NomadDriver, job_id: str) -> None:
    """Delete the run's secrets variable (a run that ended needs it no more)."""
    path = run_variable_path(job_id)
    try:
        current = driver.read_variable(path)
        if current is not None:
            driver.delete_variable(path, cas=int(current.get("ModifyIndex", 0)))
    except NomadError as exc:  # logged: the variable holds the release's secrets, for ops
        logger.warning("secrets of %s not dropped: %s", job_id, exc)


def start_run(run_id: int) -> str:
    """Take one run from queued to registered in Nomad, or to an outcome; idempotent."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn: Any = job.connection if job is not None else connect_redis(settings)
    run = OneOffRun.get_or_none(OneOffRun.id == run_id)
    if run is None:
        logger.warning("run #%d does not exist; nothing to do", run_id)
        return "missing"
    if RunStatus(run.status).is_terminal:
        return run.status
    if run.registered:
        return "following"
    claimed = claim_run(run_id)
    if claimed is None:
        return OneOffRun.get_by_id(run_id).status
    if not nomad_configured(settings):
        return _fail(run_id, "no Nomad cluster is connected (NOMAD_ADDR is empty)", redis_conn)
    try:
        return _register(claimed, settings, redis_conn)
    except NomadError as exc:
        hint = " — run the command again once Nomad answers" if exc.retryable else ""
        return _fail(run_id, f"{exc}{hint}", redis_conn)
    except (SecretKeyError, ValidationError) as exc:
        return _fail(run_id, str(exc), redis_conn)
    except Exception as exc:
        _fail(
            run_id, f"Helios stopped on an unexpected error ({type(exc).__name__}: "
            f"{str(exc)[:300]}): see the worker's log, then run the command again", redis_conn,
        )  # fmt: skip
        raise


def sweep_runs(redis_conn: redis.Redis) -> dict[str, list[int]]:
    """Queue again the runs whose registration job was lost (Redis away when they were asked
    for); fail those whose job died before Nomad accepted them (a one-off is not retried)."""
    done: dict[str, list[int]] = {"queued": [], "failed": []}
    now = utcnow()
    lost = OneOffRun.select().where(
        (OneOffRun.status == RunStatus.QUEUED.value)
        & (OneOffRun.requested_at < now - timedelta(seconds=REQUEUE_AFTER))
    )
    for run in list(lost):
        alive = job_status(redis_conn, run_job_rq_id(run.id)) in _ALIVE
        if not alive and enqueue_run(redis_conn, run.id):
            done["queued"].append(run.id)
    dead = OneOffRun.select().where(
        (OneOffRun.status == RunStatus.RUNNING.value)
        & OneOffRun.nomad_job_id.is_null()
        & (OneOffRun.started_at < now - timedelta(seconds=RUN_JOB_TIMEOUT))
    )
    for run in list(dead):
        if job_status(redis_conn, run_job_rq_id(run.id)) in _ALIVE:
            continue
        end = RunEnd(
            RunStatus.FAILED, "its job stopped before Nomad accepted it (a worker was killed "
            "or crashed): run the command again",
        )  # fmt: skip
        if finish_run(run.id, end, redis_conn=redis_conn):
            done["failed"].append(run.id)
    return done
