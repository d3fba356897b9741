"""Actions on a deployment in flight: claim, notes, submission, attempts, heartbeats, outcome;
and the follower's place in Nomad's event stream; a person's cancel of a deployment Nomad has
not accepted yet, and why a queued one waits.

The deploy job and the follower change a deployment only through these functions, so its row
and its events move together in one place. Every transition is a conditional update: a late,
repeated or concurrent call (a re-run after a crash, a replayed Nomad event, two followers)
never overwrites a state another process recorded, and never emits an event twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.exceptions import LockError
from rq import Worker

from panel.actions.apps import DEPLOY_QUEUE, NO_CLUSTER, enqueue_prune
from panel.actions.common import ActionError, actor_name, authorize
from panel.actions.logs import log_step
from panel.config import Settings
from panel.db import database
from panel.drivers.nomad import nomad_configured
from panel.events import emit, notify
from panel.metrics import count_deployment
from panel.models import Deployment, DeploymentStatus, FollowerCursor, Role, User, utcnow
from panel.queue import app_lock_name, get_queue

__all__ = [
    "FOLLOWER_ALIVE_KEY",
    "FOLLOW_CHANNEL",
    "NO_WORKER",
    "QUEUE_UNREACHABLE",
    "Ending",
    "cancel_deployment",
    "claim_deployment",
    "count_attempt",
    "deployment_event_data",
    "finish_deployment",
    "note_deployment",
    "queue_obstacles",
    "record_nomad_deployment",
    "record_submitted",
    "save_follower_cursor",
    "touch_deployments",
    "waiting_reason",
]

logger = logging.getLogger(__name__)

FOLLOW_CHANNEL = "helios:follow"  # a deploy job publishes a deployment id once Nomad accepted it
FOLLOWER_ALIVE_KEY = "helios:follower:alive"  # set by a running follower, with a short expiry
_UNFINISHED = (DeploymentStatus.QUEUED.value, DeploymentStatus.RUNNING.value)
CANCEL_LOCK_WAIT = 3  # seconds a cancel waits for a worker's attempt on the app to let go
NO_WORKER = (
    "No worker is running to take it: start one with `helios worker` (`helios up` runs one)."
)
QUEUE_UNREACHABLE = (
    "The queue (Redis) cannot be reached, so no worker can take it: start Redis or check "
    "HELIOS_REDIS_URL."
)


class Ending(Protocol):
    """How a deployment ended, as :func:`finish_deployment` records it.

    ``panel.reconcile.follow.Outcome`` is one: the judges live above the actions, so this layer
    names only what it reads.
    """

    @property
    def status(self) -> DeploymentStatus:
        """SUCCEEDED, FAILED (or REVERTED), or CANCELLED."""

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


def _emit(
    deployment: Deployment,
    subject: str,
    redis_conn: redis.Redis,
    actor: str = "system",
    **data: Any,
) -> None:
    emit(
        subject,
        {**deployment_event_data(deployment), **data},
        actor=actor,
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


def finish_deployment(
    deployment_id: int,
    outcome: Ending,
    redis_conn: redis.Redis,
    *,
    unstarted: bool = False,
    cancelled_by: str | None = None,
) -> bool:
    """Record how an unfinished deployment ended, with its event; False when it had ended.

    ``unstarted``: only while no worker claimed it (still queued). ``cancelled_by``: a person
    cancelled it (``v1.deployment.cancelled``, their name as the actor), only while Nomad has
    not accepted its job.
    """
    unfinished = (Deployment.id == deployment_id) & Deployment.status.in_(_UNFINISHED)
    if unstarted:
        unfinished &= Deployment.status == DeploymentStatus.QUEUED.value
    if cancelled_by is not None:
        unfinished &= Deployment.nomad_job_version.is_null()
    with database.atomic():  # the outcome and its event are one change
        ended = (
            Deployment.update(
                status=outcome.status.value,
                status_message=outcome.message,
                finished_at=utcnow(),
            )
            .where(unfinished)
            .execute()
        )
        if not ended:
            return False
        deployment = Deployment.get_by_id(deployment_id)
        log_step(deployment, f"{outcome.status.value}: {outcome.message}", redis_conn)
        if cancelled_by is not None:
            _emit(
                deployment, "v1.deployment.cancelled", redis_conn, actor=cancelled_by,
                reason=outcome.message[:2000],
            )  # fmt: skip
        elif outcome.status == DeploymentStatus.SUCCEEDED:
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


# ---------------------------------------------------------------------------------------------
# A person's cancel, and why a queued deployment waits
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cancelled:
    """The end a cancel records (an :class:`Ending`)."""

    message: str
    status: DeploymentStatus = DeploymentStatus.CANCELLED
    reverted_to: int | None = None


def _check_cancellable(deployment: Deployment) -> None:
    """Raise ActionError unless the deployment may still be cancelled."""
    if DeploymentStatus(deployment.status).is_terminal:
        raise ActionError(
            "conflict",
            f"deployment #{deployment.id} ended already ({deployment.status}): there is "
            "nothing to cancel",
        )
    if deployment.registered:
        raise ActionError(
            "conflict",
            f"deployment #{deployment.id} cannot be cancelled: Nomad is rolling it out "
            "already: roll back or deploy again",
        )


def cancel_deployment(
    actor: User | None, deployment: Deployment, redis_conn: redis.Redis, settings: Settings
) -> Deployment:
    """Cancel a deployment Nomad has not accepted yet (deployer); its job then does nothing.

    Taken under the app's deploy lock, which a worker holds while it submits to Nomad, so a
    cancel never ends a deployment being registered at that moment: after a short wait it is
    refused instead. The release's secrets a retried attempt may have written are pruned.
    """
    app = deployment.app
    authorize(actor, app.team, Role.DEPLOYER)
    _check_cancellable(deployment)
    lock = redis_conn.lock(
        app_lock_name(app.id), timeout=settings.deploy_lock_ttl, thread_local=False
    )
    try:
        held = lock.acquire(blocking_timeout=CANCEL_LOCK_WAIT)
    except redis.RedisError:
        raise ActionError(
            "conflict",
            "Redis cannot be reached, so Helios cannot tell whether a worker is submitting it "
            "to Nomad: try again once Redis answers",
        ) from None
    if not held:
        raise ActionError(
            "conflict", "a worker is submitting it to Nomad right now: try again in a few seconds"
        )
    who = actor_name(actor)
    try:
        _check_cancellable(Deployment.get_by_id(deployment.id))
        finish_deployment(
            deployment.id, _Cancelled(f"cancelled by {who} before it reached Nomad"),
            redis_conn, cancelled_by=who,
        )  # fmt: skip
    finally:
        with contextlib.suppress(LockError, redis.RedisError):
            lock.release()
    enqueue_prune(redis_conn, app.id)
    return Deployment.get_by_id(deployment.id)


def waiting_reason(deployment: Deployment, settings: Settings, redis_conn: redis.Redis) -> str:
    """Why a queued deployment nobody has noted on cannot go on ("" when nothing stops it)."""
    if deployment.status != DeploymentStatus.QUEUED.value or deployment.status_message:
        return ""
    return queue_obstacles(settings, redis_conn)


def queue_obstacles(settings: Settings, redis_conn: redis.Redis) -> str:
    """What keeps any queued deployment from going on, in words ("" when nothing does): no
    worker listens on the deploy queue, Redis is down, or no cluster is configured."""
    reasons = []
    try:
        queue = get_queue(redis_conn, DEPLOY_QUEUE)
        if not Worker.count(connection=redis_conn, queue=queue):
            reasons.append(NO_WORKER)
    except redis.RedisError:
        reasons.append(QUEUE_UNREACHABLE)
    if not nomad_configured(settings):
        reasons.append(NO_CLUSTER)
    return " ".join(reasons)


def save_follower_cursor(name: str, event_index: int) -> None:
    """Remember the index of the last Nomad event batch the follower ``name`` handled."""
    updated = (
        FollowerCursor.update(event_index=event_index, updated_at=utcnow())
        .where(FollowerCursor.name == name)
        .execute()
    )
    if not updated:
        FollowerCursor.create(name=name, event_index=event_index)
