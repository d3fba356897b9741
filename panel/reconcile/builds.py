"""RQ entry points of builds. Jobs take ids, re-read the rows, and are safe to run again.

``build_app(build_id)`` is short: read the commit's ``helios.toml`` through GitHub's API
(checked by the app schema, so a bad file fails the build before anything runs), render the
build's Nomad batch job (``panel.render.build``), write the build's credentials into the Nomad
Variables only its tasks can read, ask Nomad to validate the job, register it, and hand the
build to the follower (``panel.follow.builds``), which follows its allocation to the end.
The job ID is ``<app>-build-<number>``, so a re-run after a crash finds the job it registered
(same ID, same commit in its Meta) instead of registering a second one.

``stop_build(build_id)`` stops the Nomad job of a cancelled build and drops its credentials.
:func:`sweep_builds` (each worker, with the deployment sweep) queues again builds whose job was
lost or whose worker died, counting attempts on the row.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from rq import get_current_job
from rq.job import JobStatus

from panel.actions.builds import (
    BuildEnd,
    build_job_rq_id,
    claim_build,
    count_build_attempt,
    enqueue_build,
    finish_build,
    keep_repo_settings,
    note_build,
    record_build_submitted,
)
from panel.actions.team_namespace import record_job_namespace
from panel.cluster_access import with_stored_registry
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.drivers.github import GitHubClient, GitHubError
from panel.drivers.nomad import NomadDriver, NomadError, NomadErrorKind, nomad_configured
from panel.models import App, Build, BuildStatus, utcnow
from panel.namespaces import ensure_namespace, namespace_for, recorded_namespace
from panel.queue import connect_redis
from panel.reconcile.jobs import job_status
from panel.render.build import (
    BUILD_TASK,
    FETCH_TASK,
    BuildSpec,
    build_fields_from_settings,
    build_variable_path,
    render_build_job,
    render_build_variables,
)
from panel.schema.apps import AppSettings
from panel.schema.manifest import REPO_FILE, ManifestError, effective_settings, read_repo_settings
from panel.validation import ValidationError

__all__ = [
    "GIT_USERNAME",
    "build_app",
    "build_spec",
    "drop_build_credentials",
    "git_token_for",
    "stop_build",
    "sweep_builds",
]

logger = logging.getLogger(__name__)

GIT_USERNAME = "x-access-token"  # GitHub takes any user name with a token as the password
DEFAULT_DOCKERFILE = "Dockerfile"  # missing at the commit: build with buildpacks instead
REQUEUE_AFTER = 10  # seconds a queued build may lack its job before it is queued again
_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def git_token_for(app: App, settings: Settings) -> str | None:
    """The GitHub token of the person who connected the repository, in clear (or None)."""
    person = app.connected_by
    if person is None or not person.github_token:
        return None
    return SecretCipher.from_settings(settings).decrypt(person.github_token)


def build_spec(
    build: Build, settings: Settings, *, git_auth: bool, builder: str = "dockerfile"
) -> BuildSpec:
    """The BuildSpec of one build (raises ValidationError when a value is refused)."""
    app: App = build.app
    return BuildSpec(
        slug=app.slug,
        team=app.team.slug,
        release=build.number,
        git_url=f"{settings.github_url.rstrip('/')}/{app.repo}.git",
        git_sha=build.git_sha,
        branch=build.branch,
        tracked_branch=app.branch,
        repository=f"{app.team.slug}/{app.slug}",
        dockerfile=app.dockerfile,
        context=app.build_context,
        build_args=dict(app.build_args or {}),
        git_auth=git_auth,
        registry_auth=bool(settings.registry_username),
        registry_ca=_registry_ca(settings),
        builder=builder,
        **{**build_fields_from_settings(settings), "namespace": namespace_for(app.team, settings)},
    )


def _registry_ca(settings: Settings) -> str:
    """The registry's CA (HELIOS_REGISTRY_CA_FILE) as text, or "" (the system's roots)."""
    if not settings.registry_ca_file:
        return ""
    try:
        return Path(settings.registry_ca_file).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            "registry_ca_file", f"HELIOS_REGISTRY_CA_FILE cannot be read ({exc}): fix the path"
        ) from None


def _panel_settings(app: App) -> dict[str, Any]:
    return {name: getattr(app, name) for name in AppSettings.model_fields}


class _BuildRun:
    """One execution of build_app for one claimed build."""

    def __init__(self, build: Build, settings: Settings, redis_conn: redis.Redis) -> None:
        self.build = build
        self.app: App = build.app
        self.settings = settings
        self.redis = redis_conn

    def note(self, message: str) -> None:
        note_build(self.build.id, message, self.redis)

    def finish(self, message: str) -> str:
        finish_build(
            self.build.id, BuildEnd(succeeded=False, message=message),
            settings=self.settings, redis_conn=self.redis,
        )  # fmt: skip
        return Build.get_by_id(self.build.id).status

    def execute(self) -> str:
        token = git_token_for(self.app, self.settings)
        self.note(f"reading {REPO_FILE} of {self.build.git_sha[:12]}")
        builder = self._read_repo(token)
        if builder is None:
            return self.finish(
                f"the Dockerfile {self.app.dockerfile} is not in the repository at "
                f"{self.build.git_sha[:12]}: fix the app's Dockerfile setting, or clear it to "
                "build with buildpacks"
            )
        spec = build_spec(self.build, self.settings, git_auth=token is not None, builder=builder)
        body = render_build_job(spec)
        body["Job"]["Meta"]["helios.build"] = str(self.build.id)
        ensure_namespace(self.settings, self.app.team)
        record_job_namespace(self.build, spec.namespace)
        driver = NomadDriver.for_namespace(self.settings, spec.namespace)
        existing = driver.read_job(spec.job_id)
        if existing is not None:
            meta = existing.get("Meta") or {}
            if meta.get("helios.git_sha") != spec.git_sha:
                return self.finish(
                    f"Nomad already has a job {spec.job_id!r} for another commit "
                    f"({meta.get('helios.git_sha', '?')[:12]}): stop and purge it, then push again"
                )
            record_build_submitted(self.build, spec.job_id, self.redis)
            return "following"  # registered by an earlier run that died before recording it
        self._write_credentials(driver, spec, token)
        problems = driver.validate_job(body)
        if problems:
            return self.finish("Nomad refused the build job: " + "; ".join(problems))
        self.note("submitting the build job to Nomad")
        try:
            driver.register_job(spec.job_id, body, modify_index=0)
        except NomadError as exc:
            if exc.kind != NomadErrorKind.CONFLICT:
                raise
            return self.execute_again()  # another run registered it meanwhile: take that one
        record_build_submitted(self.build, spec.job_id, self.redis)
        return "registered"

    def execute_again(self) -> str:
        """After a registration conflict: the job now exists, so the first branch takes it."""
        self.retried = getattr(self, "retried", 0) + 1
        if self.retried > 1:
            return self.finish("Nomad's job for this build kept changing while Helios wrote it")
        return self.execute()

    def _read_repo(self, token: str | None) -> str | None:
        """Read the commit's helios.toml (checked whole, before building) and choose the
        builder: the Dockerfile one when the app's Dockerfile is there, buildpacks when the
        default Dockerfile is missing; None when a Dockerfile the app names is missing."""
        client = GitHubClient(self.settings.github_api_url, token or "")
        sha = self.build.git_sha
        text = client.file_at(self.app.repo, REPO_FILE, sha)
        found = read_repo_settings(text) if text is not None else {}
        effective_settings(_panel_settings(self.app), found)
        if client.file_at(self.app.repo, self.app.dockerfile, sha) is not None:
            builder = "dockerfile"
        elif self.app.dockerfile == DEFAULT_DOCKERFILE:
            builder = "buildpacks"
        else:
            return None
        keep_repo_settings(self.build.id, found, builder)
        return builder

    def _write_credentials(self, driver: NomadDriver, spec: BuildSpec, token: str | None) -> None:
        registry = None
        if spec.registry_auth:
            registry = (self.settings.registry_username, self.settings.registry_password)
        variables = render_build_variables(
            spec,
            git_credential=(GIT_USERNAME, token) if token else None,
            registry_credential=registry,
        )
        for path, items in variables.items():
            current = driver.read_variable(path)
            cas = int(current.get("ModifyIndex", 0)) if current else 0
            driver.write_variable(path, items, cas=cas)


def _retry_or_fail(run: _BuildRun, message: str) -> str:
    """Try again later (counted on the row), or fail once the attempts are spent."""
    build = Build.get_by_id(run.build.id)
    delays = run.settings.deploy_retry_delays
    attempts = count_build_attempt(build.id, build.attempts)
    if attempts is None:
        return "retrying"  # counted by a concurrent run
    if attempts > len(delays):
        return run.finish(f"{message} — gave up after {attempts} attempts")
    run.note(f"{message} — trying again in {delays[attempts - 1]} s")
    enqueue_build(run.redis, build.id, attempt=attempts + 1, delay=delays[attempts - 1])
    return "retrying"


def build_app(build_id: int) -> str:
    """Take one build from queued to registered in Nomad, or to an outcome; idempotent."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    build = Build.get_or_none(Build.id == build_id)
    if build is None:
        logger.warning("build #%d does not exist; nothing to do", build_id)
        return "missing"
    if BuildStatus(build.status).is_terminal:
        return build.status
    if build.registered:
        return "following"
    claimed = claim_build(build_id)
    if claimed is None:
        return Build.get_by_id(build_id).status
    run = _BuildRun(claimed, with_stored_registry(settings), redis_conn)
    try:
        return run.execute()
    except NomadError as exc:
        if exc.retryable:
            return _retry_or_fail(run, str(exc))
        return run.finish(str(exc))
    except GitHubError as exc:
        if exc.status == 0 or exc.status >= 500:
            return _retry_or_fail(run, f"reading {REPO_FILE}: {exc}")
        return run.finish(f"reading {REPO_FILE}: {exc}")
    except ManifestError as exc:
        return run.finish(f"{REPO_FILE} of {claimed.git_sha[:12]} is refused: {exc}")
    except (SecretKeyError, ValidationError) as exc:
        return run.finish(str(exc))
    except Exception as exc:
        run.finish(
            f"Helios stopped on an unexpected error ({type(exc).__name__}: {str(exc)[:300]}): "
            "see the worker's log, then deploy again"
        )
        raise


def drop_build_credentials(driver: NomadDriver, job_id: str) -> None:
    """Delete the build's credential variables (a build that ended needs them no more)."""
    for task in (FETCH_TASK, BUILD_TASK):
        path = build_variable_path(job_id, task)
        try:
            current = driver.read_variable(path)
            if current is not None:
                driver.delete_variable(path, cas=int(current.get("ModifyIndex", 0)))
        except NomadError as exc:  # the next build of the app writes its own anyway
            logger.warning("credentials of %s not dropped: %s", job_id, exc)


def stop_build(build_id: int) -> str:
    """Stop the Nomad job of a build that was cancelled while it ran; idempotent."""
    settings = Settings.from_env()
    build = Build.get_or_none(Build.id == build_id)
    if build is None or not build.nomad_job_id or not nomad_configured(settings):
        return "nothing to do"
    driver = NomadDriver.for_namespace(settings, recorded_namespace(build, settings))
    driver.stop_job(build.nomad_job_id)
    drop_build_credentials(driver, build.nomad_job_id)
    return "stopped"


def sweep_builds(redis_conn: redis.Redis, settings: Settings, stale_s: int) -> dict[str, list[int]]:
    """Queue again builds whose registration job was lost or whose worker died."""
    done: dict[str, list[int]] = {"queued": [], "requeued": []}
    now = utcnow()
    stale = now - timedelta(seconds=stale_s)
    rows = Build.select().where(
        (
            (Build.status == BuildStatus.QUEUED.value)
            & (Build.requested_at < now - timedelta(seconds=REQUEUE_AFTER))
        )
        | (
            (Build.status == BuildStatus.RUNNING.value)
            & Build.nomad_job_id.is_null()
            & (Build.heartbeat_at.is_null() | (Build.heartbeat_at < stale))
        )
    )
    for build in list(rows.order_by(Build.id)):
        attempt = build.attempts + 1
        status = job_status(redis_conn, build_job_rq_id(build.id, attempt))
        if status in _WAITING:
            continue
        if status == JobStatus.STARTED and build.heartbeat_at and build.heartbeat_at >= stale:
            continue
        if status is None and build.status == BuildStatus.QUEUED.value:
            if enqueue_build(redis_conn, build.id, attempt=attempt):
                done["queued"].append(build.id)
            continue
        counted = count_build_attempt(build.id, build.attempts)
        if counted is None:
            continue
        if counted > len(settings.deploy_retry_delays):
            finish_build(
                build.id,
                BuildEnd(
                    succeeded=False,
                    message=f"its build job stopped {counted} times before Nomad accepted it "
                    "(a worker was killed or crashed): see the worker's log, then push again",
                ),
                settings=settings, redis_conn=redis_conn,
            )  # fmt: skip
            continue
        note_build(
            build.id, f"the worker running it stopped; trying again (attempt {counted + 1})",
            redis_conn,
        )  # fmt: skip
        if enqueue_build(redis_conn, build.id, attempt=counted + 1):
            done["requeued"].append(build.id)
    return done
