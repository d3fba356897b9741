"""RQ entry points. Jobs take ids, re-read the rows, and are safe to run again at any point.

``deploy_app(deployment_id)``: observe the Nomad job → plan → register (check-and-set) → follow
the Nomad deployment to its end → record the outcome. A job killed anywhere and run again never
registers a second job version for the same deployment: every version Helios registers carries
``Meta["helios.deployment"]``, and a re-run looks for its own version before registering.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import redis
from redis.lock import Lock
from rq import get_current_job

from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database
from panel.drivers.nomad import NomadDriver, NomadError, NomadErrorKind
from panel.events import emit
from panel.models import App, Deployment, DeploymentStatus, Release, utcnow
from panel.nomad_schema import check_body, load_strict_spec
from panel.queue import connect_redis
from panel.reconcile.follow import Outcome, describe_plan, judge_deployment, placement_failure
from panel.releases import spec_from_snapshot
from panel.render.nomad import render_job, render_secret_variable, variable_path_for

__all__ = ["deploy_app", "find_nomad_spec", "resume_unfinished"]

logger = logging.getLogger(__name__)

REGISTER_ATTEMPTS = 3  # check-and-set conflicts tolerated before giving up
_DEFAULT_SPEC = Path(__file__).resolve().parents[3] / "shared/reference/nomad-openapi.yaml"


def find_nomad_spec(settings: Settings) -> Path | None:
    """The Nomad OpenAPI description jobs are checked against, if one is available."""
    if settings.nomad_spec:
        return Path(settings.nomad_spec)
    return _DEFAULT_SPEC if _DEFAULT_SPEC.exists() else None


def validate_job_body(body: dict[str, Any], settings: Settings) -> None:
    """Check a register body strictly against Nomad's API description (JobSpecError)."""
    path = find_nomad_spec(settings)
    if path is None:
        logger.warning("no Nomad OpenAPI description found: the job is checked by Nomad alone")
        return
    check_body(body, "JobRegisterRequest", load_strict_spec(path))


class _Run:
    """One execution of deploy_app for one deployment."""

    def __init__(self, deployment: Deployment, settings: Settings, redis_conn: redis.Redis):
        self.deployment = deployment
        self.release: Release = deployment.release
        self.app: App = deployment.app
        self.settings = settings
        self.redis = redis_conn
        self.spec = spec_from_snapshot(
            self.release.config,
            team=self.app.team.slug,
            release=self.release.number,
            deployment=deployment.id,
            settings=settings,
        )
        self.job_id = self.spec.slug
        self.driver = NomadDriver.from_settings(settings)

    # -- recording ---------------------------------------------------------------------------

    def event_data(self) -> dict[str, Any]:
        return {
            "app": self.app.slug,
            "app_id": self.app.id,
            "deployment_id": self.deployment.id,
            "release_id": self.release.id,
            "release": self.release.number,
        }

    def emit(self, subject: str, **data: Any) -> None:
        emit(subject, {**self.event_data(), **data}, team=self.app.team_id, redis_conn=self.redis)

    def note(self, message: str) -> None:
        """Record progress a person can read while the deployment runs."""
        if message != self.deployment.status_message:
            self.deployment.status_message = message
            self.deployment.save(only=[Deployment.status_message])
            logger.info("deployment #%d: %s", self.deployment.id, message)

    def finish(self, outcome: Outcome) -> str:
        d = self.deployment
        with database.atomic():
            d.status, d.status_message, d.finished_at = outcome.status, outcome.message, utcnow()
            d.save()
            if outcome.status == DeploymentStatus.SUCCEEDED:
                self.emit("v1.deployment.succeeded", nomad_job_version=d.nomad_job_version)
            elif outcome.status == DeploymentStatus.SUPERSEDED:
                self.emit("v1.deployment.superseded", by_deployment_id=outcome.by_deployment)
            else:
                extra = {}
                if outcome.reverted_to is not None:
                    extra["reverted_to_version"] = outcome.reverted_to
                self.emit("v1.deployment.failed", reason=outcome.message[:2000], **extra)
        logger.info("deployment #%d %s: %s", d.id, outcome.status, outcome.message)
        return outcome.status

    def start(self) -> None:
        claimed = (
            Deployment.update(status=DeploymentStatus.RUNNING.value, started_at=utcnow())
            .where(
                (Deployment.id == self.deployment.id)
                & (Deployment.status == DeploymentStatus.QUEUED.value)
            )
            .execute()
        )
        self.deployment = Deployment.get_by_id(self.deployment.id)
        if claimed:
            self.emit("v1.deployment.started")

    # -- observe, plan, register ---------------------------------------------------------------

    def own_version(self) -> dict[str, Any] | None:
        """The job version this deployment registered, if it did (a re-run after a crash)."""
        if self.driver.read_job(self.job_id) is None:
            return None
        mine = str(self.deployment.id)
        versions = self.driver.job_versions(self.job_id)
        found = [v for v in versions if (v.get("Meta") or {}).get("helios.deployment") == mine]
        return min(found, key=lambda v: v["Version"]) if found else None

    def sync_secrets(self) -> None:
        """Write the release's secrets to the job's Nomad Variable (values never in the job)."""
        path = variable_path_for(self.spec.slug)
        current = self.driver.read_variable(path)
        encrypted = self.release.config.get("secrets", {})
        if not encrypted:
            if current is not None:
                self.driver.delete_variable(path, cas=current["ModifyIndex"])
            return
        cipher = SecretCipher.from_settings(self.settings)
        body = render_secret_variable(
            self.spec.slug, {k: cipher.decrypt(v) for k, v in encrypted.items()}
        )
        if current is not None and current.get("Items") == body["Items"]:
            return
        cas = current["ModifyIndex"] if current is not None else 0
        self.driver.write_variable(path, body["Items"], cas=cas)

    def register(self) -> Outcome | None:
        """Register this deployment's job version once; an Outcome if it must stop here."""
        if self.deployment.nomad_job_version is not None:
            return None
        body = render_job(self.spec)
        validate_job_body(body, self.settings)
        for _attempt in range(REGISTER_ATTEMPTS):
            version = self.own_version()
            if version is None:
                self.sync_secrets()
                current = self.driver.read_job(self.job_id)
                plan = self.driver.plan_job(self.job_id, body)
                failure = placement_failure(plan.get("FailedTGAllocs"))
                if failure:
                    return Outcome(DeploymentStatus.FAILED, failure)
                self.note(f"submitting: {describe_plan(plan)}")
                index = current["JobModifyIndex"] if current else 0
                try:
                    result = self.driver.register_job(self.job_id, body, modify_index=index)
                except NomadError as exc:
                    if exc.kind != NomadErrorKind.CONFLICT:
                        raise
                    logger.info("job %s changed meanwhile; looking again", self.job_id)
                    continue
                self.deployment.nomad_eval_id = result.get("EvalID") or None
                version = self.own_version()
                if version is None:
                    continue
            self.deployment.nomad_job_version = version["Version"]
            self.deployment.save()
            self.emit(
                "v1.deployment.submitted",
                nomad_job_version=version["Version"],
                **({"nomad_eval_id": self.deployment.nomad_eval_id}
                   if self.deployment.nomad_eval_id else {}),
            )  # fmt: skip
            return None
        return Outcome(
            DeploymentStatus.FAILED,
            f"job {self.job_id} kept changing while Helios registered it "
            f"({REGISTER_ATTEMPTS} attempts): is another tool deploying it?",
        )

    # -- follow ----------------------------------------------------------------------------------

    def nomad_deployment(self) -> dict[str, Any] | None:
        version = self.deployment.nomad_job_version
        ours = [
            d for d in self.driver.job_deployments(self.job_id) if d.get("JobVersion") == version
        ]
        return max(ours, key=lambda d: d.get("CreateIndex", 0)) if ours else None

    def follow(self, lock: Lock) -> Outcome:
        deadline = time.monotonic() + self.settings.deploy_timeout
        interval = self.settings.deploy_poll_ms / 1000
        while time.monotonic() < deadline:
            found = self.nomad_deployment()
            if found is None and self.deployment.nomad_eval_id:
                evaluation = self.driver.evaluation(self.deployment.nomad_eval_id)
                failure = placement_failure(evaluation.get("FailedTGAllocs"))
                if failure:
                    return Outcome(DeploymentStatus.FAILED, failure)
            if found is not None:
                if self.deployment.nomad_deployment_id != found["ID"]:
                    self.deployment.nomad_deployment_id = found["ID"]
                    self.deployment.save(only=[Deployment.nomad_deployment_id])
                verdict = judge_deployment(found)
                if isinstance(verdict, Outcome):
                    return verdict
                self.note(verdict)
            time.sleep(interval)
            lock.reacquire()
        return Outcome(
            DeploymentStatus.FAILED,
            f"Nomad's deployment did not finish within {self.settings.deploy_timeout} s "
            "(HELIOS_DEPLOY_TIMEOUT); it may still be running: see `nomad job status "
            f"{self.job_id}`",
        )


def _retries_left() -> int:
    job = get_current_job()
    return job.retries_left or 0 if job is not None else 0


def deploy_app(deployment_id: int) -> str:
    """Take one deployment from queued to a recorded outcome; safe to run any number of times."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None:
        logger.warning("deployment #%d does not exist; nothing to do", deployment_id)
        return "missing"
    lock = redis_conn.lock(
        f"helios:deploy:app:{deployment.app_id}",
        timeout=settings.deploy_lock_ttl,
        blocking_timeout=settings.deploy_timeout,
        thread_local=False,
    )
    if not lock.acquire():
        raise TimeoutError(f"app #{deployment.app_id} stayed locked by another deploy")
    try:
        return _deploy_locked(deployment_id, settings, redis_conn, lock)
    finally:
        if lock.owned():
            lock.release()


def _deploy_locked(
    deployment_id: int, settings: Settings, redis_conn: redis.Redis, lock: Lock
) -> str:
    deployment = Deployment.get_by_id(deployment_id)
    if DeploymentStatus(deployment.status).is_terminal:
        return deployment.status
    run = _Run(deployment, settings, redis_conn)
    run.start()
    if DeploymentStatus(run.deployment.status).is_terminal:
        return run.deployment.status
    try:
        outcome = run.register() or run.follow(lock)
    except NomadError as exc:
        if exc.retryable and _retries_left() > 0:
            run.note(f"{exc} — trying again shortly")
            raise
        run.finish(Outcome(DeploymentStatus.FAILED, str(exc)))
        raise
    return run.finish(outcome)


def resume_unfinished(redis_conn: redis.Redis, settings: Settings) -> list[int]:
    """Queue again every deployment not yet finished (after a crash or a Redis restart)."""
    from panel.actions import enqueue_deploy

    pending = (
        Deployment.select(Deployment.id)
        .where(
            Deployment.status.in_([DeploymentStatus.QUEUED.value, DeploymentStatus.RUNNING.value])
        )
        .order_by(Deployment.id)
    )
    resumed = []
    for row in pending:
        if enqueue_deploy(redis_conn, row.id, settings):
            resumed.append(row.id)
    if resumed:
        logger.info("resumed deployments: %s", ", ".join(f"#{i}" for i in resumed))
    return resumed
