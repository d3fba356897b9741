"""Actions on one-off commands (`helios run APP -- CMD`): request one, claim it, record its
Nomad job, end it.

A run executes a command once in the app's live release (its image, env and secrets) as a
Nomad batch job (``panel.reconcile.runs``), followed to its end by the follower
(``panel.follow.runs``), which stores its output in the app's log and records the outcome
here, with the command's exit code. A command can read every secret of the app, so running
one needs the role that deploys. Every transition is a conditional update: a replayed or late
call changes nothing and emits nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from panel.actions.common import ActionError, FieldError, actor_name, authorize
from panel.actions.drift import live_deployments
from panel.actions.logs import log_run_step
from panel.config import Settings
from panel.db import database
from panel.events import emit
from panel.models import App, OneOffRun, RunStatus, User, utcnow
from panel.queue import get_queue
from panel.render.run import validate_run_command, validate_run_timeout
from panel.states import Role
from panel.validation import ValidationError

__all__ = [
    "RUN_FOLLOW_CHANNEL",
    "RUN_JOB",
    "RUN_JOB_TIMEOUT",
    "RUN_QUEUE",
    "RunEnd",
    "claim_run",
    "enqueue_run",
    "finish_run",
    "record_run_submitted",
    "request_run",
    "run_event_data",
    "run_job_rq_id",
]

logger = logging.getLogger(__name__)

RUN_QUEUE = "deploys"  # the deploy workers register runs' (short) jobs too
RUN_JOB = "panel.reconcile.runs.start_run"
RUN_JOB_TIMEOUT = 120  # seconds one registration may take (a few Nomad calls)
RUN_FOLLOW_CHANNEL = "helios:follow:runs"  # a run job publishes a run id once registered
_UNFINISHED = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


@dataclass(frozen=True)
class RunEnd:
    """How a run ended: its status, why in words, and the command's exit code if it ran."""

    status: RunStatus
    message: str
    exit_code: int | None = None


def run_event_data(run: OneOffRun) -> dict[str, Any]:
    """The fields every v1.run.* event carries."""
    return {
        "app": run.app.slug,
        "app_id": run.app_id,
        "run_id": run.id,
        "release": run.release.number,
    }


def _emit(run: OneOffRun, subject: str, redis_conn: redis.Redis | None, actor: str, **data: Any):
    emit(
        subject, {**run_event_data(run), **data}, actor=actor, team=run.app.team_id,
        redis_conn=redis_conn,
    )  # fmt: skip


def run_job_rq_id(run_id: int) -> str:
    """The RQ job id of a run's registration."""
    return f"run-{run_id}"


def enqueue_run(redis_conn: redis.Redis, run_id: int) -> bool:
    """Queue the job that registers a run in Nomad; False (logged) when Redis cannot."""
    try:
        get_queue(redis_conn, RUN_QUEUE).enqueue(
            RUN_JOB, run_id, job_id=run_job_rq_id(run_id), job_timeout=RUN_JOB_TIMEOUT,
            description=f"one-off run #{run_id}",
        )  # fmt: skip
    except redis.RedisError as exc:
        logger.warning("run #%d recorded but not queued: %s", run_id, exc)
        return False
    return True


def _checked(command: object, timeout: object) -> tuple[tuple[str, ...], int]:
    """The command and the timeout, or ActionError naming every field at fault."""
    problems, argv, seconds = [], (), 0
    try:
        argv = validate_run_command(command)
    except ValidationError as exc:
        problems.append(FieldError(exc.field, exc.message))
    try:
        seconds = validate_run_timeout(timeout)
    except ValidationError as exc:
        problems.append(FieldError(exc.field, exc.message))
    if problems:
        raise ActionError.invalid(problems)
    return argv, seconds


def request_run(
    *,
    actor: User | None,
    app: App,
    settings: Settings,
    redis_conn: redis.Redis,
    command: object,
    timeout: object = None,
) -> OneOffRun:
    """Run ``command`` (a list of strings) once in the app's live release, within ``timeout``
    seconds (None: the default). Needs the deployer role; the app must have a live release.
    Without a cluster (no NOMAD_ADDR) the run is recorded, and its job fails it saying so."""
    authorize(actor, app.team, Role.DEPLOYER)
    argv, seconds = _checked(command, timeout)
    live = live_deployments([app.id]).get(app.id)
    if live is None:
        raise ActionError(
            "conflict", f"{app.slug} has no live release to run a command in: deploy it first"
        )
    who = actor_name(actor)
    with database.atomic():
        run = OneOffRun.create(
            app=app, release=live.release, command=list(argv), timeout_s=seconds,
            requested_by=actor, requested_by_name=who, requested_at=utcnow(),
        )  # fmt: skip
        _emit(run, "v1.run.requested", redis_conn, who, program=argv[0][:200],
              args=len(argv) - 1, timeout=seconds)  # fmt: skip
    enqueue_run(redis_conn, run.id)
    return run


def claim_run(run_id: int) -> OneOffRun | None:
    """The run a registration job works on: queued → running, or a running one Nomad has not
    accepted yet (a re-run after a crash); None when there is nothing to do."""
    now = utcnow()
    OneOffRun.update(status=RunStatus.RUNNING.value, started_at=now).where(
        (OneOffRun.id == run_id) & (OneOffRun.status == RunStatus.QUEUED.value)
    ).execute()
    run = OneOffRun.get_or_none(OneOffRun.id == run_id)
    if run is None or run.status != RunStatus.RUNNING.value or run.registered:
        return None
    return run


def record_run_submitted(run: OneOffRun, nomad_job_id: str, redis_conn: redis.Redis) -> bool:
    """Nomad accepted the run's job (v1.run.started); then tell the follower."""
    with database.atomic():
        recorded = (
            OneOffRun.update(nomad_job_id=nomad_job_id)
            .where(
                (OneOffRun.id == run.id)
                & OneOffRun.nomad_job_id.is_null()
                & (OneOffRun.status == RunStatus.RUNNING.value)
            )
            .execute()
        )
        if recorded:
            _emit(run, "v1.run.started", redis_conn, "system", nomad_job_id=nomad_job_id)
    try:
        redis_conn.publish(RUN_FOLLOW_CHANNEL, str(run.id))
    except redis.RedisError as exc:  # the follower finds it in the database within seconds
        logger.warning("run #%d: follower not notified: %s", run.id, exc)
    return bool(recorded)


def end_line(end: RunEnd) -> str:
    """The last line of a run's log: how it ended, and the exit code."""
    if end.exit_code is not None:
        return f"helios: the command exited with code {end.exit_code} ({end.status.value})"
    return f"helios: the run ended {end.status.value}: {end.message}"


def finish_run(run_id: int, end: RunEnd, *, redis_conn: redis.Redis | None) -> bool:
    """Record how an unfinished run ended (its log's last line, v1.run.finished); False when
    it had ended already."""
    with database.atomic():
        fields = {
            "status": end.status.value,
            "status_message": end.message[:2000],
            "exit_code": end.exit_code,
            "finished_at": utcnow(),
        }
        ended = (
            OneOffRun.update(**fields)
            .where((OneOffRun.id == run_id) & OneOffRun.status.in_(_UNFINISHED))
            .execute()
        )
        if not ended:
            return False
        run = OneOffRun.get_by_id(run_id)
        log_run_step(run.app_id, run.id, end_line(end), redis_conn)
        extra: dict[str, Any] = {"status": end.status.value, "reason": end.message[:2000]}
        if end.exit_code is not None:
            extra["exit_code"] = end.exit_code
        _emit(run, "v1.run.finished", redis_conn, "system", **extra)
    logger.info("run #%d %s: %s", run_id, end.status.value, end.message)
    return True
