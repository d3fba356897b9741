"""Actions on a deployment in flight: claim, notes, submission, attempts, heartbeats, outcome;
and the follower's place in Nomad's event stream.

The deploy job and the follower change a deployment only through these functions, so its row
and its events move together in one place. Every transition is a conditional update: a late,
repeated or concurrent call (a re-run after a crash, a replayed Nomad event, two followers)
never overwrites a state another process recorded, and never emits an event twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

import redis

from panel.actions.logs import log_step
from panel.db import database
from panel.events import emit, notify
from panel.metrics import count_deployment
from panel.models import Deployment, DeploymentStatus, FollowerCursor, utcnow

__all__ = [
    "FOLLOWER_ALIVE_KEY",
    "FOLLOW_CHANNEL",
    "Ending",
    "claim_deployment",
    "count_attempt",
    "deployment_event_data",
    "finish_deployment",
    "note_deployment",
    "record_nomad_deployment",
    "record_submitted",
    "save_follower_cursor",
    "touch_deployments",
]

logger = logging.getLogger(__name__)

FOLLOW_CHANNEL = "helios:follow"  # a deploy job publishes a deployment id once Nomad accepted it
FOLLOWER_ALIVE_KEY = "helios:follower:alive"  # set by a running follower, with a short expiry
_UNFINISHED = (DeploymentStatus.QUEUED.value, DeploymentStatus.RUNNING.value)


class Ending(Protocol):
    """How a deployment ended, as :func:`finish_deployment` records it.

    ``panel.reconcile.follow.Outcome`` is one: the judges live above the actions, so this layer
    names only what it reads.
    """

    @property
    def status(self) -> DeploymentStatus:
        """SUCCEEDED or FAILED."""

    @property
    def message(self) -> str:
        """Why, in Helios's words."""

    @property
    def reverted_to(self) -> int | None:
        """The job version Nomad rolled back to, if it did."""


def deployment_event_data(deployment: Deployment) -> dict[str, Any]:
    """The fields every v1.deployment.* event carries."""
    return {
        "app": deployment.app.slug,
        "app_id": deployment.app_id,
        "deployment_id": deployment.id,
        "release_id": deployment.release_id,
        "release": deployment.release.number,
    }


def _emit(deployment: Deployment, subject: str, redis_conn: redis.Redis, **data: Any) -> None:
    emit(
        subject,
        {**deployment_event_data(deployment), **data},
        team=deployment.app.team_id,
        redis_conn=redis_conn,
    )


def claim_deployment(deployment_id: int, redis_conn: redis.Redis) -> bool:
    """queued → running (v1.deployment.started); False when it was not queued any more."""
    now = utcnow()
    with database.atomic():
        claimed = (
            Deployment.update(
                status=DeploymentStatus.RUNNING.value, started_at=now, heartbeat_at=now
            )
            .where(
                (Deployment.id == deployment_id)
                & (Deployment.status == DeploymentStatus.QUEUED.value)
            )
            .execute()
        )
        if claimed:
            deployment = Deployment.get_by_id(deployment_id)
            log_step(deployment, "a worker started the deployment", redis_conn)
            _emit(deployment, "v1.deployment.started", redis_conn)
    return bool(claimed)


def note_deployment(
    deployment_id: int, message: str, redis_conn: redis.Redis | None = None
) -> bool:
    """Show what is happening on an unfinished deployment; False once it has ended.

    A note is no event (nobody audits "waiting for allocations"), but with ``redis_conn`` live
    pages are told at once (``live.deployment.noted``), so none of them polls for notes.
    """
    with database.atomic():
        noted = bool(
            Deployment.update(status_message=message)
            .where(
                (Deployment.id == deployment_id)
                & Deployment.status.in_(_UNFINISHED)
                & (Deployment.status_message != message)
            )
            .execute()
        )
        if noted:
            log_step(Deployment.get_by_id(deployment_id), message, redis_conn)
        else:  # the same note again (nothing to write), or the deployment ended
            noted = Deployment.select().where(
                (Deployment.id == deployment_id) & Deployment.status.in_(_UNFINISHED)
            ).exists()  # fmt: skip
    if noted and redis_conn is not None:
        notify(redis_conn, "live.deployment.noted", {"deployment_id": deployment_id})
    return noted


def count_attempt(deployment_id: int, seen: int | None = None) -> int | None:
    """Count one more attempt that ended without an outcome; the number counted so far.

    With ``seen`` (the count the caller read), only when nobody counted meanwhile: of several
    workers sweeping at once, one counts and queues the next attempt; the others get None.
    """
    query = Deployment.update(attempts=Deployment.attempts + 1).where(
        Deployment.id == deployment_id
    )
    if seen is not None:
        query = query.where(Deployment.attempts == seen)
    if not query.execute():
        return None
    return Deployment.get_by_id(deployment_id).attempts


def touch_deployments(ids: Iterable[int]) -> int:
    """Move the heartbeat of unfinished deployments (one UPDATE); how many rows moved."""
    wanted = list(ids)
    if not wanted:
        return 0
    return (
        Deployment.update(heartbeat_at=utcnow())
        .where(Deployment.id.in_(wanted) & Deployment.status.in_(_UNFINISHED))
        .execute()
    )


def record_submitted(
    deployment: Deployment, *, version: int, eval_id: str | None, redis_conn: redis.Redis
) -> bool:
    """Nomad accepted the job version (v1.deployment.submitted); then tell the follower.

    False when the version was recorded before (a re-run that found its own registration).
    """
    unrecorded = (
        (Deployment.id == deployment.id)
        & Deployment.nomad_job_version.is_null()
        & (Deployment.status == DeploymentStatus.RUNNING.value)
    )
    with database.atomic():
        recorded = (
            Deployment.update(
                nomad_job_version=version, nomad_eval_id=eval_id, heartbeat_at=utcnow()
            )
            .where(unrecorded)
            .execute()
        )
        if recorded:
            log_step(deployment, f"Nomad accepted job version {version}", redis_conn)
            extra = {"nomad_eval_id": eval_id} if eval_id else {}
            _emit(
                deployment,
                "v1.deployment.submitted",
                redis_conn,
                nomad_job_version=version,
                **extra,
            )
    try:
        redis_conn.publish(FOLLOW_CHANNEL, str(deployment.id))
    except redis.RedisError as exc:  # the follower finds it in the database within seconds
        logger.warning("deployment #%d: follower not notified: %s", deployment.id, exc)
    return bool(recorded)


def record_nomad_deployment(deployment_id: int, nomad_deployment_id: str) -> None:
    """Remember the id of the Nomad deployment that rolls this deployment's version out."""
    Deployment.update(nomad_deployment_id=nomad_deployment_id).where(
        (Deployment.id == deployment_id)
        & (
            Deployment.nomad_deployment_id.is_null()
            | (Deployment.nomad_deployment_id != nomad_deployment_id)
        )
    ).execute()


def finish_deployment(deployment_id: int, outcome: Ending, redis_conn: redis.Redis) -> bool:
    """Record how an unfinished deployment ended, with its event; False when it had ended."""
    with database.atomic():  # the outcome and its event are one change
        ended = (
            Deployment.update(
                status=outcome.status.value,
                status_message=outcome.message,
                finished_at=utcnow(),
            )
            .where((Deployment.id == deployment_id) & Deployment.status.in_(_UNFINISHED))
            .execute()
        )
        if not ended:
            return False
        deployment = Deployment.get_by_id(deployment_id)
        log_step(deployment, f"{outcome.status.value}: {outcome.message}", redis_conn)
        if outcome.status == DeploymentStatus.SUCCEEDED:
            _emit(
                deployment, "v1.deployment.succeeded", redis_conn,
                nomad_job_version=deployment.nomad_job_version,
            )  # fmt: skip
        else:
            extra = {}
            if outcome.reverted_to is not None:
                extra["reverted_to_version"] = outcome.reverted_to
            _emit(
                deployment, "v1.deployment.failed", redis_conn, reason=outcome.message[:2000],
                **extra,
            )  # fmt: skip
    count_deployment(outcome.status.value)  # once committed: a rolled-back end is no end
    level = logging.INFO if outcome.status == DeploymentStatus.SUCCEEDED else logging.WARNING
    logger.log(level, "deployment #%d %s: %s", deployment_id, outcome.status.value, outcome.message)
    return True


def save_follower_cursor(name: str, event_index: int) -> None:
    """Remember the index of the last Nomad event batch the follower ``name`` handled."""
    updated = (
        FollowerCursor.update(event_index=event_index, updated_at=utcnow())
        .where(FollowerCursor.name == name)
        .execute()
    )
    if not updated:
        FollowerCursor.create(name=name, event_index=event_index)
