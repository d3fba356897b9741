"""Actions on builds: request one, claim it, record its Nomad job, note progress, end it.

A build is one commit of a repo app's tracked branch built into an image by a Nomad batch job
(``panel.reconcile.builds``), followed to its end by the follower, which records the outcome
here. A build that succeeded cuts its release and queues its deploy in the same transaction as
its outcome, so a release only ever exists for an image that was built, and a crash between
the two cannot lose the deploy (the worker's sweep queues a recorded deployment that has no
job). Every transition is a conditional update, as for deployments: a replayed or late call
changes nothing and emits nothing.

Builds of one app run one at a time: a new build supersedes the app's queued builds and
cancels its running ones (their Nomad jobs are stopped by ``stop_build`` jobs); a build of a
commit that is already queued or running is that build, not a second one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import peewee as pw
import redis

from panel.actions.apps import cut_release, enqueue_deploy
from panel.actions.common import ActionError, actor_name, authorize
from panel.cluster_access import with_stored_registry
from panel.config import Settings
from panel.db import database
from panel.events import emit, notify
from panel.metrics import observe_build
from panel.models import App, Build, BuildStatus, User, WebhookDelivery, utcnow
from panel.queue import get_queue
from panel.states import Role
from panel.validation import ValidationError, validate_branch, validate_git_sha

__all__ = [
    "BUILD_FOLLOW_CHANNEL",
    "BUILD_JOB",
    "BUILD_QUEUE",
    "BuildEnd",
    "RequestedBuild",
    "build_event_data",
    "build_job_rq_id",
    "cancel_build",
    "claim_build",
    "count_build_attempt",
    "enqueue_build",
    "enqueue_stop_build",
    "finish_build",
    "keep_repo_settings",
    "latest_builds",
    "may_redeliver",
    "note_build",
    "record_build_submitted",
    "record_delivery",
    "redeliver",
    "request_build",
    "touch_builds",
]

logger = logging.getLogger(__name__)

BUILD_QUEUE = "deploys"  # the deploy workers run builds' (short) registration jobs too
BUILD_JOB = "panel.reconcile.builds.build_app"
STOP_BUILD_JOB = "panel.reconcile.builds.stop_build"
BUILD_JOB_TIMEOUT = 600  # seconds one registration run may take (a few Nomad and GitHub calls)
BUILD_FOLLOW_CHANNEL = "helios:follow:builds"  # a build job publishes a build id once registered
_UNFINISHED = (BuildStatus.QUEUED.value, BuildStatus.RUNNING.value)


@dataclass(frozen=True)
class RequestedBuild:
    """The build a request led to; ``created`` False when it was one already queued or running."""

    build: Build
    created: bool
    enqueued: bool


@dataclass(frozen=True)
class BuildEnd:
    """How a build ended, as the follower judged it."""

    succeeded: bool
    message: str
    digest: str = ""
    image: str = ""
    exit_code: int | None = None
    cancelled: bool = False


def build_event_data(build: Build) -> dict[str, Any]:
    """The fields every v1.build.* event carries."""
    return {
        "app": build.app.slug,
        "app_id": build.app_id,
        "build_id": build.id,
        "build": build.number,
        "git_sha": build.git_sha,
    }


def _emit(build: Build, subject: str, redis_conn: redis.Redis | None, actor: str, **data: Any):
    emit(
        subject, {**build_event_data(build), **data}, actor=actor, team=build.app.team_id,
        redis_conn=redis_conn,
    )  # fmt: skip


def build_job_rq_id(build_id: int, attempt: int = 1) -> str:
    """The RQ job id of one attempt of a build's registration."""
    return f"build-{build_id}" if attempt <= 1 else f"build-{build_id}-{attempt}"


def enqueue_build(
    redis_conn: redis.Redis, build_id: int, *, attempt: int = 1, delay: int = 0
) -> bool:
    """Queue (after ``delay`` seconds) one attempt of a build's registration job; False
    (logged) when Redis cannot."""
    queue = get_queue(redis_conn, BUILD_QUEUE)
    options = {
        "job_id": build_job_rq_id(build_id, attempt),
        "job_timeout": BUILD_JOB_TIMEOUT,
        "description": f"build #{build_id} (attempt {attempt})",
    }
    try:
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), BUILD_JOB, build_id, **options)
        else:
            queue.enqueue(BUILD_JOB, build_id, **options)
    except redis.RedisError as exc:  # the row is the record: the sweep queues it later
        logger.warning("build #%d recorded but not queued: %s", build_id, exc)
        return False
    return True


def enqueue_stop_build(redis_conn: redis.Redis, build_id: int) -> bool:
    """Queue the job that stops a cancelled build's Nomad job."""
    try:
        get_queue(redis_conn, BUILD_QUEUE).enqueue(
            STOP_BUILD_JOB, build_id, job_id=f"stop-build-{build_id}",
            job_timeout=BUILD_JOB_TIMEOUT, description=f"stop build #{build_id}",
        )  # fmt: skip
    except redis.RedisError as exc:  # the follower ends it when Nomad reports the job done
        logger.warning("build #%d: its Nomad job not stopped now: %s", build_id, exc)
        return False
    return True


def record_delivery(
    *,
    app: App,
    delivery: str,
    event: str,
    outcome: str,
    reason: str,
    git_sha: str = "",
    branch: str = "",
) -> WebhookDelivery | None:
    """Keep a verified delivery; None when this app already has it (a copy: do nothing)."""
    try:
        with database.atomic():
            return WebhookDelivery.create(
                app=app, delivery=delivery, event=event, outcome=outcome, reason=reason[:2000],
                git_sha=git_sha, branch=branch, received_at=utcnow(),
            )  # fmt: skip
    except pw.IntegrityError:
        return None


def _set_delivery(delivery: WebhookDelivery | None, outcome: str, reason: str) -> None:
    if delivery is not None:
        WebhookDelivery.update(outcome=outcome, reason=reason[:2000]).where(
            WebhookDelivery.id == delivery.id
        ).execute()


def request_build(
    *,
    actor: User | None,
    app: App,
    settings: Settings,
    redis_conn: redis.Redis,
    git_sha: str,
    branch: str | None = None,
    reason: str = "deploy",
    delivery: WebhookDelivery | None = None,
    by: str | None = None,
) -> RequestedBuild:
    """Build ``git_sha`` of the app's repository, then deploy it.

    ``actor`` None with ``by`` is the system acting for someone (``by="github"`` for a push);
    a person needs the deployer role. The delivery, when given, records the outcome.
    """
    authorize(actor, app.team, Role.DEPLOYER)
    who = by or actor_name(actor)
    try:
        if not app.repo:
            raise ActionError(
                "invalid", f"{app.slug} runs an image, not a repository: there is nothing to "
                "build (deploy it instead)",
            )  # fmt: skip
        if not with_stored_registry(settings).registry:
            raise ActionError(
                "invalid", "builds need a registry: put a host in the registry group and "
                "apply (Hosts), or the operator sets HELIOS_REGISTRY (see the README, 'What "
                "the cluster needs for builds')",
            )  # fmt: skip
        try:
            sha = validate_git_sha(git_sha, "git_sha")
            if not sha:
                raise ValidationError("git_sha", "git_sha is empty: give the commit to build")
            chosen = validate_branch(branch or app.branch, "branch")
        except ValidationError as exc:
            raise ActionError("invalid", exc.message, field=exc.field) from None
        for _ in range(3):  # two requests may pick the same number: the loser tries again
            try:
                requested = _record_build(
                    app, sha, chosen, reason, delivery, actor, who, redis_conn
                )
                break
            except pw.IntegrityError:
                continue
        else:
            raise ActionError("conflict", "too many builds requested at once: try again")
    except ActionError as exc:
        _set_delivery(delivery, "failed", exc.message)
        raise
    build, created, cancelled = requested
    if not created:
        _set_delivery(delivery, "accepted", f"build #{build.number} of this commit is under way")
        return RequestedBuild(build, created=False, enqueued=True)
    for old in cancelled:
        enqueue_stop_build(redis_conn, old)
    return RequestedBuild(build, created=True, enqueued=enqueue_build(redis_conn, build.id))


def _record_build(
    app: App,
    sha: str,
    branch: str,
    reason: str,
    delivery: WebhookDelivery | None,
    actor: User | None,
    who: str,
    redis_conn: redis.Redis,
) -> tuple[Build, bool, list[int]]:
    with database.atomic():
        # One request at a time per app: SQLite's writers are serialised by BEGIN IMMEDIATE;
        # elsewhere the app's row is locked, so the number and the superseding stay consistent.
        if not isinstance(database.obj, pw.SqliteDatabase):
            list(App.select(App.id).where(App.id == app.id).for_update())
        unfinished = Build.select().where((Build.app == app.id) & Build.status.in_(_UNFINISHED))
        same = unfinished.where(Build.git_sha == sha).order_by(Build.id.desc()).first()
        if same is not None:
            return same, False, []
        last = Build.select(pw.fn.MAX(Build.number)).where(Build.app == app.id).scalar()
        build = Build.create(
            app=app, number=(last or 0) + 1, git_sha=sha, branch=branch, reason=reason[:200],
            delivery=delivery, triggered_by=actor, requested_at=utcnow(),
        )  # fmt: skip
        cancelled = []
        for old in unfinished.where(Build.id != build.id):
            if old.status == BuildStatus.QUEUED.value and not old.registered:
                message = f"superseded by build #{build.number} before it started"
                subject, status, extra = (
                    "v1.build.superseded",
                    BuildStatus.SUPERSEDED,
                    {"by_build_id": build.id},
                )
            else:
                message = f"stopped: build #{build.number} of a newer commit replaces it"
                subject, status, extra = (
                    "v1.build.cancelled",
                    BuildStatus.CANCELLED,
                    {"reason": message},
                )
                cancelled.append(old.id)
            Build.update(status=status.value, status_message=message, finished_at=utcnow()).where(
                (Build.id == old.id) & Build.status.in_(_UNFINISHED)
            ).execute()
            _emit(old, subject, redis_conn, who, **extra)
        data: dict[str, Any] = {"branch": branch, "reason": reason[:200]}
        if delivery is not None:
            data["delivery"] = delivery.delivery
        _emit(build, "v1.build.requested", redis_conn, who, **data)
        _set_delivery(delivery, "accepted", f"build #{build.number} requested")
        return build, True, cancelled


def claim_build(build_id: int) -> Build | None:
    """The build a registration run works on: queued → running, or a running one that Nomad
    has not accepted yet (a re-run after a crash); None when there is nothing to do."""
    now = utcnow()
    with database.atomic():
        Build.update(status=BuildStatus.RUNNING.value, started_at=now, heartbeat_at=now).where(
            (Build.id == build_id) & (Build.status == BuildStatus.QUEUED.value)
        ).execute()
        build = Build.get_or_none(Build.id == build_id)
    if build is None or build.status != BuildStatus.RUNNING.value or build.registered:
        return None
    return build


def note_build(build_id: int, message: str, redis_conn: redis.Redis | None = None) -> bool:
    """Show what is happening on an unfinished build; False once it has ended."""
    noted = bool(
        Build.update(status_message=message[:2000])
        .where((Build.id == build_id) & Build.status.in_(_UNFINISHED))
        .execute()
    )
    if noted and redis_conn is not None:
        notify(redis_conn, "live.build.noted", {"build_id": build_id})
    return noted


def keep_repo_settings(build_id: int, repo_settings: dict[str, Any], builder: str) -> None:
    """Remember what the commit's helios.toml sets and which builder builds it (both read
    before the build starts)."""
    Build.update(repo_settings=repo_settings, builder=builder).where(Build.id == build_id).execute()


def record_build_submitted(build: Build, nomad_job_id: str, redis_conn: redis.Redis) -> bool:
    """Nomad accepted the build's job (v1.build.started); then tell the follower."""
    with database.atomic():
        recorded = (
            Build.update(nomad_job_id=nomad_job_id, heartbeat_at=utcnow())
            .where(
                (Build.id == build.id)
                & Build.nomad_job_id.is_null()
                & (Build.status == BuildStatus.RUNNING.value)
            )
            .execute()
        )
        if recorded:
            _emit(build, "v1.build.started", redis_conn, "system", nomad_job_id=nomad_job_id)
    try:
        redis_conn.publish(BUILD_FOLLOW_CHANNEL, str(build.id))
    except redis.RedisError as exc:  # the follower finds it in the database within seconds
        logger.warning("build #%d: follower not notified: %s", build.id, exc)
    return bool(recorded)


def count_build_attempt(build_id: int, seen: int) -> int | None:
    """Count one more registration run that ended without an outcome, unless someone did."""
    counted = (
        Build.update(attempts=Build.attempts + 1)
        .where((Build.id == build_id) & (Build.attempts == seen))
        .execute()
    )
    return Build.get_by_id(build_id).attempts if counted else None


def touch_builds(ids: list[int]) -> int:
    """Move the heartbeat of unfinished builds (one UPDATE)."""
    if not ids:
        return 0
    return (
        Build.update(heartbeat_at=utcnow())
        .where(Build.id.in_(ids) & Build.status.in_(_UNFINISHED))
        .execute()
    )


def cancel_build(
    *, actor: User | None, build: Build, redis_conn: redis.Redis, reason: str = ""
) -> bool:
    """Stop an unfinished build (a person's choice); False when it had ended."""
    authorize(actor, build.app.team, Role.DEPLOYER)
    message = reason or f"cancelled by {actor_name(actor)}"
    with database.atomic():
        ended = (
            Build.update(
                status=BuildStatus.CANCELLED.value, status_message=message, finished_at=utcnow()
            )
            .where((Build.id == build.id) & Build.status.in_(_UNFINISHED))
            .execute()
        )
        if ended:
            _emit(build, "v1.build.cancelled", redis_conn, actor_name(actor), reason=message)
    if ended and build.nomad_job_id:
        enqueue_stop_build(redis_conn, build.id)
    return bool(ended)


def finish_build(
    build_id: int, end: BuildEnd, *, settings: Settings, redis_conn: redis.Redis
) -> bool:
    """Record how an unfinished build ended; on success cut its release and queue its deploy.

    False when the build had ended (a replay, or it was cancelled meanwhile: then nothing is
    deployed). A build that succeeded but whose release cannot deploy (the commit's settings
    are refused) stays succeeded, with that reason, and deploys nothing.
    """
    status = BuildStatus.SUCCEEDED if end.succeeded else BuildStatus.FAILED
    if end.cancelled:
        status = BuildStatus.CANCELLED
    deployment = None
    with database.atomic():
        ended = (
            Build.update(
                status=status.value,
                status_message=end.message[:2000],
                finished_at=utcnow(),
                digest=end.digest,
                image=end.image,
                exit_code=end.exit_code,
            )
            .where((Build.id == build_id) & Build.status.in_(_UNFINISHED))
            .execute()
        )
        if not ended:
            return False
        build = Build.get_by_id(build_id)
        if status != BuildStatus.SUCCEEDED:
            subject = "v1.build.failed" if status == BuildStatus.FAILED else "v1.build.cancelled"
            extra: dict[str, Any] = {"reason": end.message[:2000]}
            if end.exit_code is not None and status == BuildStatus.FAILED:
                extra["exit_code"] = end.exit_code
            _emit(build, subject, redis_conn, "system", **extra)
        else:
            try:
                with database.atomic():
                    deployment = cut_release(
                        actor=None, app=build.app, settings=settings, redis_conn=redis_conn,
                        image=end.image, git_sha=build.git_sha, reason="build",
                        repo_settings=build.repo_settings or None,
                    )  # fmt: skip
            except ActionError as exc:
                note = f"built {end.digest}, but not deployed: {exc.message}"
                Build.update(status_message=note[:2000]).where(Build.id == build_id).execute()
            extra = {"image": end.image, "digest": end.digest}
            if deployment is not None:
                Build.update(deployment=deployment).where(Build.id == build_id).execute()
                extra["deployment_id"] = deployment.id
            _emit(build, "v1.build.succeeded", redis_conn, "system", **extra)
    if deployment is not None:
        enqueue_deploy(redis_conn, deployment.id, settings)
    observe_build(status.value, build.started_at or build.requested_at, build.finished_at)
    level = logging.INFO if status == BuildStatus.SUCCEEDED else logging.WARNING
    logger.log(level, "build #%d %s: %s", build_id, status.value, end.message)
    return True


# ---------------------------------------------------------------------------------------------
# Redelivery: a person builds a delivery's commit again
# ---------------------------------------------------------------------------------------------


def latest_builds(delivery_ids: list[int]) -> dict[int, Build]:
    """The newest build each of these deliveries led to, by delivery id (one query)."""
    if not delivery_ids:
        return {}
    builds = Build.select().where(Build.delivery.in_(delivery_ids)).order_by(Build.id)
    return {build.delivery_id: build for build in builds}


def may_redeliver(delivery: WebhookDelivery, build: Build | None) -> bool:
    """Whether building the delivery's commit again makes sense: it failed, or its build did."""
    failed = delivery.outcome == "failed" or (
        build is not None and build.status == BuildStatus.FAILED.value
    )
    return failed and bool(delivery.git_sha)


def redeliver(
    *,
    actor: User | None,
    delivery: WebhookDelivery,
    settings: Settings,
    redis_conn: redis.Redis,
) -> RequestedBuild:
    """Build the commit of a delivery that failed (or whose build failed) again.

    Needs the deployer role. The new build is the delivery's (its outcome says how it went);
    a delivery that did not fail, or names no commit, is refused with the reason.
    """
    app = delivery.app
    authorize(actor, app.team, Role.DEPLOYER)
    build = latest_builds([delivery.id]).get(delivery.id)
    if not delivery.git_sha:
        raise ActionError("invalid", "this delivery names no commit: there is nothing to build")
    if not may_redeliver(delivery, build):
        under_way = f"build #{build.number} is {build.status}" if build else "it did not fail"
        raise ActionError(
            "conflict", f"delivery {delivery.delivery} needs no second try: {under_way}"
        )
    return request_build(
        actor=actor, app=app, settings=settings, redis_conn=redis_conn,
        git_sha=delivery.git_sha, branch=delivery.branch or None, reason="redelivery",
        delivery=delivery,
    )  # fmt: skip
