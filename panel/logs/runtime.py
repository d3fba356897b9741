"""Deploy and runtime logs of apps: what every allocation of an app's job does and prints.

The follower hands each allocation it hears of (Nomad's event stream, topic Allocation, and a
read of every app's allocations when it connects) to :meth:`AppLogs.on_allocation`, which

- maps the allocation to its app (the job's id is the app's slug) and to the Helios deployment
  that rolled its version out (Nomad's deployment id, else the job version), so an old
  deployment keeps its log;
- stores each task event once, as a ``nomad`` line ("Restarting: Exit Code 1", "Terminated:
  OOM Killed", "Alloc Unhealthy: Task not running for min_healthy_time", "Driver Failure:
  image pull failed"), scrubbed;
- starts the collectors of :mod:`panel.logs.collect` on the output (stdout, stderr) of each task
  that started: they follow Nomad's logs API from the stored offset and store scrubbed lines
  through :func:`panel.actions.logs.append_app_log`.

The scrubber of a deployment knows the secrets of its release and the app's current ones.
Helios's own steps (queued, submitted, the outcome) are written by the deployment actions.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from panel.actions.logs import (
    Appended,
    app_stream_offsets,
    append_app_log,
    append_task_events,
    end_app_stream,
)
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.drivers.nomad import NomadDriver, NomadError
from panel.logs.collect import LogCollectors, Sink
from panel.logs.scrub import Scrubber
from panel.models import App, Deployment, EnvVar, Release
from panel.namespaces import namespace_for

__all__ = ["AppLogs", "AppSink", "deployment_scrubber", "event_line", "release_scrubber"]

logger = logging.getLogger(__name__)

APP_CACHE_SECONDS = 30.0  # a job id found to be no app's is looked up again after this
SCRUBBER_SECONDS = 30.0  # a deployment's scrubber is made again after this (new secrets)
RECENT_NS = 3600 * 10**9  # a finished allocation's output is still collected this long after
_TERMINAL = ("complete", "failed", "lost")


def deployment_scrubber(app: App, deployment: Deployment | None, cipher: SecretCipher) -> Scrubber:
    """The secrets an allocation of ``deployment`` may print: its release's and the app's
    current ones (a value changed since is named ``KEY (current)``)."""
    return release_scrubber(app, deployment.release if deployment else None, cipher)


def release_scrubber(app: App, release: Release | None, cipher: SecretCipher) -> Scrubber:
    """The secrets a task of ``release`` may print: the release's and the app's current ones
    (a value changed since is named ``KEY (current)``)."""
    secrets: dict[str, str] = {}
    released = dict(release.config.get("secrets", {})) if release else {}
    current = {
        row.key: row.value
        for row in EnvVar.select().where((EnvVar.app == app.id) & EnvVar.is_secret)
    }
    for names, suffix in ((released, ""), (current, " (current)")):
        for key, token in names.items():
            try:
                value = cipher.decrypt(token)
            except SecretKeyError:  # unreadable: then no task could have received it either
                continue
            name = key if key not in secrets else key + suffix
            if value and secrets.get(key) != value:
                secrets[name] = value
    return Scrubber(secrets)


def event_line(event: dict[str, Any]) -> str:
    """A task event as one line: its type, then what Nomad says of it."""
    kind = str(event.get("Type") or "Event")
    said = str(event.get("DisplayMessage") or event.get("Message") or "").strip()
    details = event.get("Details") or {}
    if not said:
        said = str(details.get("message") or details.get("driver_error") or "")
    return f"{kind}: {said}" if said else kind


class AppSink:
    """The output of one allocation of an app (``app_log``)."""

    def __init__(
        self, app_id: int, slug: str, deployment_id: int | None, alloc: str, process: str,
        settings: Settings, redis_conn: redis.Redis,
    ) -> None:  # fmt: skip
        self.app_id, self.deployment_id, self.alloc, self.process = (
            app_id, deployment_id, alloc, process,
        )  # fmt: skip
        self.settings, self.redis = settings, redis_conn
        self.label = f"app {slug} allocation {alloc[:8]}"

    def offsets(self) -> dict[tuple[str, str], tuple[int, bool]]:
        return app_stream_offsets(self.alloc)

    def append(self, task: str, kind: str, text: str, *, after: int, offset: int) -> Appended:
        return append_app_log(
            self.app_id, self.deployment_id, alloc=self.alloc, process=self.process, task=task,
            stream=kind, text=text, after=after, offset=offset,
            max_bytes=self.settings.log_max_bytes, redis_conn=self.redis,
        )  # fmt: skip

    def end(self, task: str, kind: str, *, offset: int) -> None:
        end_app_stream(
            self.app_id, self.deployment_id, alloc=self.alloc, process=self.process, task=task,
            stream=kind, offset=offset, redis_conn=self.redis,
        )  # fmt: skip


class AppLogs:
    """The follower's part that collects apps' task events and output."""

    def __init__(
        self, settings: Settings, redis_conn: redis.Redis, driver: NomadDriver | None,
        collectors: LogCollectors,
    ) -> None:  # fmt: skip
        self.settings, self.redis, self.driver = settings, redis_conn, driver
        self.collectors = collectors
        self.apps: dict[str, tuple[int | None, float]] = {}  # job id → (app id, looked up at)
        self.deployments: dict[tuple[int, str], int | None] = {}
        self.seen: dict[str, int] = {}  # allocation → ModifyIndex handled
        self.scrubbers: dict[tuple[int, int | None], tuple[Scrubber, float]] = {}
        self._cipher: SecretCipher | None = None

    # -- from the follower's loop (in a database connection) ---------------------------------

    def on_allocation(self, alloc: dict[str, Any]) -> None:
        """An allocation changed: store its new task events, collect its started tasks."""
        alloc_id = str(alloc.get("ID") or "")
        app = self._app(str(alloc.get("JobID") or ""))
        if app is None or not alloc_id:
            return
        index = int(alloc.get("ModifyIndex") or 0)
        if index and self.seen.get(alloc_id, -1) >= index:
            return
        self.seen[alloc_id] = index
        deployment_id = self._deployment_of(app.id, alloc)
        states = alloc.get("TaskStates") or {}
        scrubber: Scrubber | None = None
        process = str(alloc.get("TaskGroup") or "")
        for task, state in sorted(states.items()):
            events = [e for e in (state or {}).get("Events") or () if e.get("Time")]
            if not events:
                continue
            scrubber = scrubber or self._scrubber(app, deployment_id)
            append_task_events(
                app.id, deployment_id, alloc=alloc_id, process=process, task=task,
                events=[(int(e["Time"]), scrubber.scrub(event_line(e))) for e in events],
                redis_conn=self.redis,
            )  # fmt: skip
        started = [
            task for task, state in sorted(states.items())
            if (state or {}).get("StartedAt") or (state or {}).get("State") == "dead"
        ]  # fmt: skip
        if self.driver is None or not started or not self._recent(alloc):
            return
        self.collectors.follow_tasks(
            ("app", app.id), app.slug, alloc_id, started,
            lambda: self._prepare(app.id, app.slug, deployment_id, alloc_id, process),
        )  # fmt: skip

    def resync(self, slugs: list[str] | None = None) -> None:
        """Read the allocations of every app's job (on connect: events may have been missed)."""
        if self.driver is None:
            return
        query = App.live(App.id, App.slug, App.team)
        if slugs is not None:
            query = query.where(App.slug.in_(slugs))
        for app in query:
            driver = self.driver.in_namespace(namespace_for(app.team, self.settings))
            try:
                allocations = driver.allocations(app.slug)
            except NomadError as exc:  # not registered yet (404), or Nomad away: events tell
                logger.debug("allocations of %s not read: %s", app.slug, exc)
                continue
            for stub in allocations:
                if stub.get("ClientStatus") in _TERMINAL and not self._recent(stub):
                    continue
                try:
                    full = self.driver.allocation(stub["ID"])
                except NomadError:
                    continue
                self.on_allocation(full)

    # -- helpers -------------------------------------------------------------------------------

    def _app(self, job_id: str) -> App | None:
        if not job_id:
            return None
        known = self.apps.get(job_id)
        now = time.monotonic()
        if known is not None and (known[0] is not None or now - known[1] < APP_CACHE_SECONDS):
            if known[0] is None:
                return None
            return App.live().where(App.id == known[0]).first()
        app = App.live().where(App.slug == job_id).first()
        self.apps[job_id] = (app.id if app else None, now)
        return app

    def _deployment_of(self, app_id: int, alloc: dict[str, Any]) -> int | None:
        """The Helios deployment of the allocation's version (None: not one of ours)."""
        nomad_id = str(alloc.get("DeploymentID") or "")
        version = alloc.get("JobVersion")
        if version is None:
            version = (alloc.get("Job") or {}).get("Version")
        key = (app_id, nomad_id or f"v{version}")
        if key in self.deployments and self.deployments[key] is not None:
            return self.deployments[key]
        query = Deployment.select(Deployment.id).where(Deployment.app == app_id)
        found = None
        if nomad_id:
            found = query.where(Deployment.nomad_deployment_id == nomad_id).first()
        if found is None and version is not None:
            found = (
                query.where(Deployment.nomad_job_version == int(version))
                .order_by(Deployment.id.desc())
                .first()
            )
        self.deployments[key] = found.id if found else None
        return self.deployments[key]

    def _scrubber(self, app: App, deployment_id: int | None) -> Scrubber:
        """The deployment's scrubber, made again after SCRUBBER_SECONDS (secrets change)."""
        key = (app.id, deployment_id)
        cached = self.scrubbers.get(key)
        if cached is not None and time.monotonic() - cached[1] < SCRUBBER_SECONDS:
            return cached[0]
        scrubber = self._make_scrubber(app, deployment_id)
        if len(self.scrubbers) > 1000:
            self.scrubbers.clear()
        self.scrubbers[key] = (scrubber, time.monotonic())
        return scrubber

    def _make_scrubber(self, app: App, deployment_id: int | None) -> Scrubber:
        deployment = (
            Deployment.get_or_none(Deployment.id == deployment_id) if deployment_id else None
        )
        if self._cipher is None:
            self._cipher = SecretCipher.from_settings(self.settings)
        return deployment_scrubber(app, deployment, self._cipher)

    def _prepare(
        self, app_id: int, slug: str, deployment_id: int | None, alloc_id: str, process: str
    ) -> tuple[Sink, Scrubber] | None:
        app = App.get_or_none(App.id == app_id)
        if app is None:
            return None
        sink = AppSink(app_id, slug, deployment_id, alloc_id, process, self.settings, self.redis)
        return sink, self._scrubber(app, deployment_id)

    @staticmethod
    def _recent(alloc: dict[str, Any]) -> bool:
        """Running, or finished within the last hour (its last output is still wanted)."""
        if alloc.get("ClientStatus") not in _TERMINAL:
            return True
        changed = int(alloc.get("ModifyTime") or 0)
        return not changed or time.time_ns() - changed < RECENT_NS
