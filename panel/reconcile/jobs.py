"""RQ entry points of deployments. Jobs take ids, re-read the rows, and are safe to run again.

``deploy_app(deployment_id)`` is short: observe (the job's versions, one read) → plan → write
this release's secrets into the app's variable (one read, one check-and-set write) → register
with check-and-set → hand the deployment to the follower (``panel.follow``), which follows
Nomad's deployment to its end. A job killed anywhere and run again never registers a second
job version for the same deployment: every version Helios registers carries
``Meta["helios.deployment"]``, and a re-run looks for its own version first. One run at a time
per app: a Redis lock that expires a few seconds after its holder dies, renewed by a thread
while held.

``prune_secrets(app_id)`` drops the variable items of releases no job version can run any
more. :func:`sweep_deployments` (each worker, every few seconds) queues again deployments whose
job was lost or whose worker died, counting attempts on the row. A deployment no worker took
within HELIOS_DEPLOY_START_TIMEOUT of its request fails instead of running (by its job or the
sweep): nothing deploys long after it was asked for, unseen.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

import peewee as pw
import redis
from redis.exceptions import LockError
from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from panel.actions.apps import deploy_job_id, enqueue_deploy
from panel.actions.deployments import (
    FOLLOWER_ALIVE_KEY,
    claim_deployment,
    count_attempt,
    finish_deployment,
    note_deployment,
    record_submitted,
    touch_deployments,
)
from panel.actions.team_namespace import record_job_namespace
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.db import database
from panel.drivers.nomad import NomadDriver, NomadError, NomadErrorKind, nomad_configured
from panel.models import App, Deployment, DeploymentStatus, utcnow
from panel.namespaces import app_namespaces, ensure_namespace, namespace_for, recorded_namespace
from panel.queue import app_lock_name, connect_redis
from panel.reconcile.follow import Outcome, describe_plan, placement_failure
from panel.releases import spec_from_snapshot
from panel.render.nomad import (
    drop_release_items,
    keep_release_items,
    merge_release_items,
    render_job,
    scaled_job,
    variable_path_for,
)
from panel.spec import WEB
from panel.validation import ValidationError

__all__ = [
    "deploy_app",
    "expire_unstarted",
    "job_status",
    "max_attempts",
    "prune_secrets",
    "render_deployment",
    "runnable_releases",
    "stale_after",
    "sweep_deployments",
]

logger = logging.getLogger(__name__)

REGISTER_ATTEMPTS = 3  # check-and-set conflicts tolerated before giving up
VARIABLE_ATTEMPTS = 3  # check-and-set conflicts on the app's variable before giving up
LOCK_WAIT = 300  # seconds a run waits for the previous run of the same app to finish
REQUEUE_AFTER = 10  # seconds a queued deployment may lack its job before it is queued again
UNWATCHED_AFTER = 30  # seconds a registered deployment may lack a follower's heartbeat
SWEEP_LOCK = "helios:sweep:deployments"
SWEEP_LOCK_TTL = 60  # seconds; a sweep takes milliseconds, a killed sweeper's lock expires
WAITING_NOTE = "waiting for the previous run of this app to stop"
_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def max_attempts(settings: Settings) -> int:
    """Attempts a deployment gets while Nomad is unreachable: one, then one per retry delay."""
    return len(settings.deploy_retry_delays) + 1


def _span(seconds: int) -> str:
    """``900`` → "15 minutes"; seconds when they are no whole minutes."""
    if seconds % 60:
        return f"{seconds} s"
    minutes = seconds // 60
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


def expire_unstarted(deployment: Deployment, settings: Settings, redis_conn: redis.Redis) -> bool:
    """Fail a deployment no worker took within HELIOS_DEPLOY_START_TIMEOUT of its request
    (True), rather than deploy what someone asked for long ago without them seeing it."""
    if deployment.status != DeploymentStatus.QUEUED.value:
        return False
    limit = settings.deploy_start_timeout
    if deployment.requested_at > utcnow() - timedelta(seconds=limit):
        return False
    message = f"not started: no worker took it within {_span(limit)} of the request; deploy again"
    # Only while still queued: a worker that claimed it meanwhile goes on with it.
    return finish_deployment(
        deployment.id, Outcome(DeploymentStatus.FAILED, message), redis_conn, unstarted=True
    )


def stale_after(settings: Settings) -> int:
    """Seconds without a heartbeat after which the process holding a deployment is dead."""
    return max(3 * settings.deploy_lock_ttl, 6)


# ---------------------------------------------------------------------------------------------
# Holding an app: its lock, renewed, and the deployment's heartbeat
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _holding(
    redis_conn: redis.Redis, app_id: int, settings: Settings, deployment_id: int | None = None
) -> Iterator[bool]:
    """Hold the app's lock (True) or give up after LOCK_WAIT seconds (False).

    A thread renews the lock every third of its TTL and moves the deployment's heartbeat, also
    while waiting: a SIGKILLed holder's lock expires within HELIOS_DEPLOY_LOCK_TTL seconds.
    """
    ttl = settings.deploy_lock_ttl
    lock = redis_conn.lock(app_lock_name(app_id), timeout=ttl, thread_local=False)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(ttl / 3):
            try:
                if lock.owned():
                    lock.reacquire()
            except (LockError, redis.RedisError) as exc:
                logger.warning("app #%d: deploy lock not renewed: %s", app_id, exc)
            if deployment_id is None:
                continue
            try:
                with database.connection_context():
                    touch_deployments([deployment_id])
            except pw.PeeweeException as exc:  # the next beat tries again
                logger.warning("deployment #%d: heartbeat not recorded: %s", deployment_id, exc)

    if deployment_id is not None:
        touch_deployments([deployment_id])  # alive from the first moment, for the sweep
    thread = threading.Thread(target=beat, name=f"app-{app_id}-lock", daemon=True)
    thread.start()
    try:
        acquired = lock.acquire(blocking=False)
        if not acquired:
            if deployment_id is not None:
                note_deployment(deployment_id, WAITING_NOTE, redis_conn)
            acquired = lock.acquire(blocking_timeout=LOCK_WAIT)
        yield bool(acquired)
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(LockError, redis.RedisError):
            if lock.owned():
                lock.release()


# ---------------------------------------------------------------------------------------------
# deploy_app
# ---------------------------------------------------------------------------------------------


def _scrub(text: str, secrets: Mapping[str, str]) -> str:
    """A message with every secret value of the release masked."""
    for value in sorted(secrets.values(), key=len, reverse=True):
        if value:
            text = text.replace(value, "••••••••")
    return text


class _Run:
    """One execution of deploy_app for one deployment, holding its app's lock."""

    def __init__(self, deployment_id: int, settings: Settings, redis_conn: redis.Redis) -> None:
        self.deployment: Deployment = Deployment.get_by_id(deployment_id)
        self.release = self.deployment.release
        self.app: App = self.deployment.app
        self.settings = settings
        self.redis = redis_conn
        self.secrets: dict[str, str] = {}
        self.job_id = self.app.slug
        self.path = variable_path_for(self.app.slug)
        self.driver: NomadDriver | None = None

    # -- outcome -----------------------------------------------------------------------------

    def note(self, message: str) -> None:
        """Progress a person can read while the job runs."""
        note_deployment(self.deployment.id, _scrub(message, self.secrets), self.redis)
        logger.info("deployment #%d: %s", self.deployment.id, _scrub(message, self.secrets))

    def finish(self, outcome: Outcome) -> str:
        """Record the outcome (secret values masked); the status the deployment has now."""
        clean = Outcome(outcome.status, _scrub(outcome.message, self.secrets), outcome.reverted_to)
        finish_deployment(self.deployment.id, clean, self.redis)
        return Deployment.get_by_id(self.deployment.id).status

    def execute(self) -> str:
        """Claim the deployment, then submit it; every failure ends in a recorded state."""
        claim_deployment(self.deployment.id, self.redis)
        self.deployment = Deployment.get_by_id(self.deployment.id)
        if DeploymentStatus(self.deployment.status).is_terminal:
            return self.deployment.status
        if self.deployment.registered:
            return "following"
        try:
            self.driver = NomadDriver.for_namespace(self.settings, self._namespace())
            outcome = self.submit()
        except NomadError as exc:
            return self.nomad_failed(exc)
        except (SecretKeyError, ValidationError) as exc:
            return self.finish(Outcome(DeploymentStatus.FAILED, str(exc)))
        except Exception as exc:
            # A bug: end the deployment with a reason, then let RQ log the traceback. No RQ
            # retry is configured, and a failed deployment is never queued again.
            self.finish(
                Outcome(
                    DeploymentStatus.FAILED,
                    f"Helios stopped on an unexpected error ({type(exc).__name__}: "
                    f"{str(exc)[:300]}): see the worker's log, then deploy again",
                )
            )
            raise
        if outcome is not None:
            return self.finish(outcome)
        return "registered"

    def nomad_failed(self, exc: NomadError) -> str:
        """Retry later when Nomad may recover (counted on the row), else fail at once.

        Either way one log line and no traceback: these are the cluster's answers, not bugs.
        """
        if not exc.retryable:
            return self.finish(Outcome(DeploymentStatus.FAILED, str(exc)))
        attempts, most = count_attempt(self.deployment.id), max_attempts(self.settings)
        if attempts >= most:
            return self.finish(
                Outcome(DeploymentStatus.FAILED, f"{exc} — gave up after {most} attempts")
            )
        delay = self.settings.deploy_retry_delays[attempts - 1]
        self.note(f"{exc} — trying again in {delay} s (attempt {attempts} of {most})")
        enqueue_deploy(self.redis, self.deployment.id, attempt=attempts + 1, delay=delay)
        return "retrying"

    def _namespace(self) -> str:
        """The namespace this deployment registers in, recorded on its row (its team's; the
        namespace is created first when Helios owns it)."""
        namespace = self.deployment.nomad_namespace
        if not namespace:
            namespace = ensure_namespace(self.settings, self.app.team)
            record_job_namespace(self.deployment, namespace)
        return namespace

    # -- observe, write secrets, plan, register ----------------------------------------------

    def submit(self) -> Outcome | None:
        """Register this deployment's job version once; an Outcome when it must stop here."""
        assert self.driver is not None
        versions = self._versions()
        if self._found_own(versions):
            return None
        body = render_deployment(self.deployment, self.settings)
        cipher = SecretCipher.from_settings(self.settings)
        encrypted = self.release.config.get("secrets", {})
        self.secrets = {key: cipher.decrypt(value) for key, value in encrypted.items()}
        try:
            return self._plan_and_register(body, versions)
        except NomadError as exc:
            # A retry reuses the items; a final failure takes them out again (not after a
            # denial: nothing was written, and asking again would only be denied again).
            if not exc.retryable and exc.kind != NomadErrorKind.DENIED:
                self._withdraw_secrets()
            raise

    def _versions(self) -> list[dict[str, Any]]:
        """Every stored version of the job, newest first ([] when Nomad has none)."""
        try:
            versions = self.driver.job_versions(self.job_id)
        except NomadError as exc:
            if exc.kind == NomadErrorKind.NOT_FOUND:
                return []
            raise
        return sorted(versions, key=lambda version: version["Version"], reverse=True)

    def _found_own(self, versions: list[dict[str, Any]]) -> bool:
        """A version this deployment registered before (a re-run after a crash): record it."""
        mine = str(self.deployment.id)
        found = [v for v in versions if (v.get("Meta") or {}).get("helios.deployment") == mine]
        if not found:
            return False
        version = min(v["Version"] for v in found)
        record_submitted(self.deployment, version=version, eval_id=None, redis_conn=self.redis)
        logger.info("deployment #%d had registered version %d", self.deployment.id, version)
        return True

    def _plan_and_register(
        self, body: dict[str, Any], versions: list[dict[str, Any]]
    ) -> Outcome | None:
        for _attempt in range(REGISTER_ATTEMPTS):
            current = versions[0] if versions else None
            # Nomad validates the job when it plans it: an invalid job fails here with its reasons.
            plan = self.driver.plan_job(self.job_id, body)
            failure = placement_failure(plan.get("FailedTGAllocs"))
            if failure:
                self._withdraw_secrets()
                return Outcome(DeploymentStatus.FAILED, failure)
            self.note(f"submitting: {describe_plan(plan)}")
            if self.secrets:
                # After the plan, so a release that cannot be placed changes nothing; before
                # the register, so its allocations find their items. Items of other releases
                # stay: what their allocations render does not change.
                _change_variable(
                    self.driver,
                    self.path,
                    lambda items: merge_release_items(items, self.release.number, self.secrets),
                )
            index = current["JobModifyIndex"] if current else 0
            try:
                result = self.driver.register_job(self.job_id, body, modify_index=index)
            except NomadError as exc:
                if exc.kind != NomadErrorKind.CONFLICT:
                    raise
                logger.info("job %s changed meanwhile; looking again", self.job_id)
                versions = self._versions()
                if self._found_own(versions):
                    return None
                continue
            # Check-and-set succeeded on top of ``current``, and this deployment's Meta differs
            # from every version's: Nomad stored the next version number.
            version = current["Version"] + 1 if current else 0
            record_submitted(
                self.deployment, version=version, eval_id=result.get("EvalID") or None,
                redis_conn=self.redis,
            )  # fmt: skip
            return None
        self._withdraw_secrets()
        return Outcome(
            DeploymentStatus.FAILED,
            f"job {self.job_id} kept changing while Helios registered it "
            f"({REGISTER_ATTEMPTS} attempts): is another tool deploying it?",
        )

    # -- the app's variable ------------------------------------------------------------------

    def _withdraw_secrets(self) -> None:
        """Nothing was registered: take this release's items out again (best effort)."""
        if not self.secrets:
            return
        number = self.release.number
        try:
            _change_variable(
                self.driver, self.path, lambda items: drop_release_items(items, number)
            )
        except NomadError as exc:  # the next prune of the app removes them
            logger.warning("deployment #%d: secrets of release %d left: %s",
                           self.deployment.id, number, exc)  # fmt: skip


def _change_variable(
    driver: NomadDriver, path: str, change: Callable[[dict[str, str]], dict[str, str]]
) -> bool:
    """Read the variable, apply ``change``, write it back with check-and-set (delete it when
    nothing is left: Nomad refuses empty variables); retried on a concurrent change. True when
    something was written."""
    for _attempt in range(VARIABLE_ATTEMPTS):
        variable = driver.read_variable(path)
        items = dict(variable["Items"]) if variable else {}
        wanted = change(items)
        if wanted == items:
            return False
        try:
            if wanted:
                driver.write_variable(path, wanted, cas=variable["ModifyIndex"] if variable else 0)
            else:
                driver.delete_variable(path, cas=variable["ModifyIndex"])
            return True
        except NomadError as exc:
            if exc.kind != NomadErrorKind.CONFLICT:
                raise
    raise NomadError(
        NomadErrorKind.CONFLICT,
        f"variable {path!r} kept changing while Helios wrote it: is another tool writing it?",
    )


def render_deployment(deployment: Deployment, settings: Settings) -> dict[str, Any]:
    """The job body a deployment registers: its release's snapshot rendered for it, with the
    web group's count a scale set (the drift check compares Nomad's job with this body of the
    live deployment, so a scaled app is no drift)."""
    spec = spec_from_snapshot(
        deployment.release.config,
        team=deployment.app.team.slug,
        release=deployment.release.number,
        deployment=deployment.id,
        settings=settings,
    )
    body = render_job(spec)
    if deployment.instance_count is not None:
        body = scaled_job(body, WEB, deployment.instance_count)
    return body


def deploy_app(deployment_id: int) -> str:
    """Take one deployment from queued to registered in Nomad, or to an outcome; idempotent."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None:
        logger.warning("deployment #%d does not exist; nothing to do", deployment_id)
        return "missing"
    if DeploymentStatus(deployment.status).is_terminal:
        return deployment.status
    if deployment.registered:
        return "following"  # the follower has it
    if expire_unstarted(deployment, settings, redis_conn):
        return DeploymentStatus.FAILED.value
    with _holding(redis_conn, deployment.app_id, settings, deployment.id) as held:
        if not held:
            return _Run(deployment_id, settings, redis_conn).nomad_failed(
                NomadError(
                    NomadErrorKind.SERVER,
                    f"another run held app {deployment.app.slug!r} for {LOCK_WAIT} s",
                )
            )
        return _Run(deployment_id, settings, redis_conn).execute()


# ---------------------------------------------------------------------------------------------
# prune_secrets
# ---------------------------------------------------------------------------------------------


def runnable_releases(
    versions: list[dict[str, Any]], allocations: list[dict[str, Any]]
) -> set[int] | None:
    """Releases some version of the job may still run; None when that cannot be told.

    Those are the current version's; while the current version is not stable (its deployment
    has not succeeded), the newest stable version's, which Nomad reverts to when that
    deployment fails; and those of allocations that run or are about to.
    """
    if not versions:
        return set()
    releases: dict[int, int | None] = {}
    for version in versions:
        number = (version.get("Meta") or {}).get("helios.release", "")
        releases[version["Version"]] = int(number) if number.isdigit() else None
    current = max(releases)
    wanted = {current}
    stable = {v["Version"] for v in versions if v.get("Stable")}
    if current not in stable and stable:
        wanted.add(max(stable))
    wanted |= {
        alloc["JobVersion"]
        for alloc in allocations
        if alloc.get("DesiredStatus") == "run"
        and alloc.get("ClientStatus") in {"pending", "running"}
    }
    if not wanted <= set(releases):
        return None  # an allocation runs a version Nomad no longer lists: keep everything
    return {releases[v] for v in wanted if releases[v] is not None}


def prune_secrets(app_id: int) -> str:
    """Drop the variable items of releases no version of the app can run any more."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    app = App.get_or_none(App.id == app_id)
    if app is None or not nomad_configured(settings):
        return "nothing to do"
    with _holding(redis_conn, app.id, settings) as held:
        if not held:
            return "busy"  # the app's next deployment prunes again
        try:
            namespace = namespace_for(app.team, settings)
            driver = NomadDriver.for_namespace(settings, namespace)
            _leave_old_namespaces(app, settings, namespace)
            try:
                versions = driver.job_versions(app.slug)
            except NomadError as exc:
                if exc.kind != NomadErrorKind.NOT_FOUND:
                    raise
                versions = []
            keep = runnable_releases(versions, driver.allocations(app.slug) if versions else [])
            if keep is None:
                return "kept"
            _change_variable(
                driver, variable_path_for(app.slug), lambda items: keep_release_items(items, keep)
            )
        except NomadError as exc:
            logger.warning("app %s: secrets not pruned: %s", app.slug, exc)
            return "skipped"
    return "pruned"


def _leave_old_namespaces(app: App, settings: Settings, namespace: str) -> None:
    """Once a deployment of the app succeeded in its team's namespace, purge the app's job
    (and variable) from every namespace it ran in before (a team moved); idempotent."""
    moved = [ns for ns in app_namespaces(app, settings) if ns != namespace]
    if not moved:
        return
    latest = (
        Deployment.select(Deployment.nomad_namespace)
        .where((Deployment.app == app.id) & (Deployment.status == DeploymentStatus.SUCCEEDED.value))
        .order_by(Deployment.id.desc())
        .first()
    )
    if latest is None or recorded_namespace(latest, settings) != namespace:
        return  # nothing runs in the new namespace yet: the old job keeps serving
    for old in moved:
        driver = NomadDriver.for_namespace(settings, old)
        if driver.read_job(app.slug) is not None:
            driver.purge_job(app.slug)
            logger.info("app %s runs in namespace %s: its job in %s purged", app.slug,
                        namespace, old)  # fmt: skip
        _change_variable(driver, variable_path_for(app.slug), lambda _items: {})


# ---------------------------------------------------------------------------------------------
# The sweep: lost jobs, dead runs, unwatched deployments
# ---------------------------------------------------------------------------------------------


def job_status(redis_conn: redis.Redis, job_id: str) -> JobStatus | None:
    try:
        return Job.fetch(job_id, connection=redis_conn).get_status()
    except NoSuchJobError:
        return None


def _revive(
    deployment: Deployment, redis_conn: redis.Redis, settings: Settings, stale: Any
) -> str | None:
    """Queue an unregistered deployment again if no job of it waits or lives; what was done."""
    attempt = deployment.attempts + 1
    status = job_status(redis_conn, deploy_job_id(deployment.id, attempt))
    if status in _WAITING:
        return None  # its job waits in the queue or for its retry: never a second copy
    alive = deployment.heartbeat_at is not None and deployment.heartbeat_at >= stale
    if status == JobStatus.STARTED and alive:
        return None  # a worker runs it right now
    if status is None and deployment.status == DeploymentStatus.QUEUED.value:
        # Recorded while Redis was down, or Redis lost its queue: its first job never ran.
        return "queued" if enqueue_deploy(redis_conn, deployment.id, attempt=attempt) else None
    # Its run died (a killed worker) or ended without an outcome: that was an attempt.
    attempts, most = count_attempt(deployment.id, seen=deployment.attempts), max_attempts(settings)
    if attempts is None:
        return None  # another worker's sweep counted this attempt and queued the next one
    if attempts >= most:
        finish_deployment(
            deployment.id,
            Outcome(
                DeploymentStatus.FAILED,
                f"its deploy job stopped {attempts} times before Nomad accepted the job "
                "(a worker was killed or crashed): see the worker's log, then deploy again",
            ),
            redis_conn,
        )
        return "failed"
    note_deployment(
        deployment.id,
        f"the worker running it stopped; trying again (attempt {attempts + 1} of {most})",
        redis_conn,
    )
    enqueue_deploy(redis_conn, deployment.id, attempt=attempts + 1)
    return "requeued"


def _note_unwatched(redis_conn: redis.Redis) -> list[int]:
    """Say so on registered deployments no follower has looked at for a while."""
    since = utcnow() - timedelta(seconds=UNWATCHED_AFTER)
    unwatched = Deployment.select().where(
        (Deployment.status == DeploymentStatus.RUNNING.value)
        & Deployment.nomad_job_version.is_null(False)
        & (Deployment.heartbeat_at.is_null() | (Deployment.heartbeat_at < since))
    )
    try:
        follower = redis_conn.exists(FOLLOWER_ALIVE_KEY)
    except redis.RedisError:
        follower = True  # cannot tell: say nothing
    if follower:
        return []
    noted = []
    message = (
        "Nomad accepted it, but no follower is running to see how it ends: start "
        "`helios follower` (`helios up` starts one); it picks this deployment up"
    )
    for deployment in list(unwatched):  # read before writing (see sweep_deployments)
        if deployment.status_message != message and note_deployment(
            deployment.id, message, redis_conn
        ):
            noted.append(deployment.id)
    return noted


def sweep_deployments(redis_conn: redis.Redis, settings: Settings) -> dict[str, list[int]]:
    """Queue again deployments whose job was lost or whose worker died; note unwatched ones.

    Registered deployments belong to the follower and are never queued again. Idempotent.
    """
    done: dict[str, list[int]] = {"queued": [], "requeued": [], "failed": [], "noted": []}
    # One sweep at a time across workers: two would both see a dead run and both queue its
    # next attempt (attempts are also counted with check-and-set, should this lock expire).
    lock = redis_conn.lock(SWEEP_LOCK, timeout=SWEEP_LOCK_TTL)
    if not lock.acquire(blocking=False):
        return done
    try:
        _sweep(redis_conn, settings, done)
    finally:
        with contextlib.suppress(LockError, redis.RedisError):
            lock.release()
    if any(done.values()):
        logger.info("deployment sweep: %s", {k: v for k, v in done.items() if v})
    return done


def _sweep(redis_conn: redis.Redis, settings: Settings, done: dict[str, list[int]]) -> None:
    now = utcnow()
    stale = now - timedelta(seconds=stale_after(settings))
    unregistered = Deployment.select().where(
        (
            (Deployment.status == DeploymentStatus.QUEUED.value)
            & (Deployment.requested_at < now - timedelta(seconds=REQUEUE_AFTER))
        )
        | (
            (Deployment.status == DeploymentStatus.RUNNING.value)
            & Deployment.nomad_job_version.is_null()
            & (Deployment.heartbeat_at.is_null() | (Deployment.heartbeat_at < stale))
        )
    )
    # Read into a list before writing: SQLite refuses a write at once ("database is locked",
    # without waiting busy_timeout) while this connection still reads a query's rows.
    for deployment in list(unregistered.order_by(Deployment.id)):
        if expire_unstarted(deployment, settings, redis_conn):
            done["failed"].append(deployment.id)
            continue
        action = _revive(deployment, redis_conn, settings, stale)
        if action:
            done[action].append(deployment.id)
    done["noted"] = _note_unwatched(redis_conn)
