"""The follower's builds: each registered build is followed through its allocation's events.

The :class:`~panel.follow.follower.Follower` owns the event stream (topic ``Allocation``) and
its loop; this class keeps the builds it watches and decides what an allocation means:

- an allocation of a watched build's job changes → judge it (``panel.reconcile.build_judge``);
- a complete allocation → read the build task's log for its ``helios-build-digest`` line and
  record success with the image ``<registry>/<repository>@<digest>``; recording it cuts the
  release and queues its deploy (``panel.actions.builds.finish_build``);
- a failed or lost one → record why (a time or memory limit, the failing step's exit code and
  its last lines of output);
- on every (re)connect, each watched build's allocations are read once (a resync);
- once a build's allocation is known, its logs are collected on threads of their own
  (:mod:`panel.logs.collect`): nothing here waits on them;
- a build still running its time limits plus a margin after it started is stopped and failed;
- either way the build's credentials are deleted from Nomad's Variables.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from panel.actions.builds import BuildEnd, finish_build, note_build, touch_builds
from panel.cluster_access import with_stored_registry
from panel.config import Settings
from panel.drivers.nomad import NomadDriver, NomadError
from panel.follow.batch import BatchJobs
from panel.logs.collect import LogCollectors
from panel.models import App, Build, BuildStatus, utcnow
from panel.reconcile.build_judge import (
    BuildVerdict,
    find_digest,
    judge_build_allocation,
    last_lines,
    newest,
)
from panel.reconcile.builds import drop_build_credentials
from panel.render.build import BUILD_TASK, FETCH_TIME_LIMIT_S

__all__ = ["BuildWatch", "BuildWatcher"]

logger = logging.getLogger(__name__)

DEADLINE_MARGIN = 120  # seconds past a build's own time limits before the follower stops it
PROGRESS_INTERVAL = 1.0


@dataclass
class BuildWatch:
    """One build the follower follows."""

    build_id: int
    job_id: str
    deadline: float
    seen_index: int = 0
    progress: str = ""
    written: str = ""
    written_at: float = 0.0
    alloc_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    namespace: str = ""  # of its job ("": the driver's, NOMAD_NAMESPACE)


class BuildWatcher(BatchJobs[BuildWatch]):
    """The watched builds and what to do with their allocations (called from the loop only)."""

    def __init__(
        self, settings: Settings, redis_conn: redis.Redis, driver: NomadDriver | None,
        stop: threading.Event | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.settings = settings
        self.redis = redis_conn
        self.driver = driver
        self.logs = LogCollectors(settings, redis_conn, stop or threading.Event())
        self.finished = 0

    def ids(self) -> list[int]:
        return list(self.watched)

    # -- which builds ------------------------------------------------------------------------

    def scan(self, *, resync: bool) -> None:
        """Watch every registered running build; forget those that ended elsewhere."""
        rows = {
            row.id: row
            for row in Build.select(Build, App)
            .join(App)
            .where((Build.status == BuildStatus.RUNNING.value) & Build.nomad_job_id.is_null(False))
        }
        for build_id in list(self.watched):
            if build_id not in rows:
                self._forget(build_id)
        for build_id, row in sorted(rows.items()):
            if build_id not in self.watched:
                self._add(row, resync=resync)

    def watch_id(self, build_id: int, *, resync: bool) -> None:
        """A build job said Nomad accepted this build."""
        if build_id in self.watched:
            return
        row = Build.get_or_none(Build.id == build_id)
        if row is not None and row.status == BuildStatus.RUNNING.value and row.registered:
            self._add(row, resync=resync)

    def _add(self, row: Build, *, resync: bool) -> None:
        started = row.started_at or row.requested_at
        limit = self.settings.build_timeout + min(FETCH_TIME_LIMIT_S, self.settings.build_timeout)
        age = max(0.0, (utcnow() - started).total_seconds())
        watch = BuildWatch(
            build_id=row.id,
            job_id=row.nomad_job_id,
            deadline=time.monotonic() + limit + DEADLINE_MARGIN - age,
            namespace=row.nomad_namespace or "",
        )
        self._track(row.id, watch)
        if resync:
            self.resync(watch)

    # -- what Nomad says ---------------------------------------------------------------------

    def resync(self, watch: BuildWatch) -> None:
        """Read the build's allocations once (after a (re)connect, or when first watched)."""
        if self.driver is None:
            return
        allocations = self._allocations(watch)
        alloc = newest(allocations)
        if alloc is not None:
            self.on_allocation(alloc)
        elif not allocations and self._job_gone(watch):
            self._end(watch, BuildEnd(False, f"Nomad has no job {watch.job_id!r} any more"))

    def _job_gone(self, watch: BuildWatch) -> bool:
        return self._nomad(watch).read_job(watch.job_id) is None

    def on_allocation(self, alloc: dict[str, Any]) -> None:
        """An allocation changed: apply it if it belongs to a watched build and is newer."""
        build_id = self.by_job.get(alloc.get("JobID", ""))
        watch = self.watched.get(build_id) if build_id is not None else None
        if watch is None:
            return
        index = alloc.get("ModifyIndex") or 0
        if index and index <= watch.seen_index and alloc.get("ID") == watch.alloc_id:
            return
        watch.seen_index, watch.alloc_id = index, alloc.get("ID", "")
        if self.driver is not None and watch.alloc_id:
            self.logs.follow(watch.build_id, watch.job_id, alloc)
        verdict = judge_build_allocation(
            alloc, time_limit_s=self.settings.build_timeout, memory_mb=self.settings.build_memory
        )
        if not verdict.done:
            watch.progress = verdict.progress
            return
        self._end(watch, self._ending(watch, alloc, verdict))

    def _ending(self, watch: BuildWatch, alloc: dict[str, Any], verdict: BuildVerdict) -> BuildEnd:
        """How the build ended, with what its log says (the digest, or its last lines)."""
        log, errors = self._log(alloc, verdict.task or BUILD_TASK)
        if verdict.succeeded:
            digest = find_digest(log)
            if not digest:
                return BuildEnd(
                    False, "the build exited 0 without printing the pushed image's digest "
                    "(helios-build-digest): see its log", exit_code=verdict.exit_code,
                )  # fmt: skip
            registry = with_stored_registry(self.settings).registry
            image = f"{registry}/{_repository(watch)}@{digest}"
            return BuildEnd(True, f"built and pushed {image}", digest=digest, image=image)
        tail = last_lines(errors) or last_lines(log)
        message = verdict.message + (f":\n{tail}" if tail else "")
        return BuildEnd(False, message, exit_code=verdict.exit_code)

    def _log(self, alloc: dict[str, Any], task: str) -> tuple[str, str]:
        if self.driver is None:
            return "", ""
        try:
            out = self.driver.read_log(alloc["ID"], task)
            err = self.driver.read_log(alloc["ID"], task, stderr=True)
        except NomadError as exc:
            logger.warning("build log of %s not read: %s", alloc.get("ID"), exc)
            return "", ""
        return out, err

    def _end(self, watch: BuildWatch, end: BuildEnd) -> None:
        self._forget(watch.build_id)
        if finish_build(watch.build_id, end, settings=self.settings, redis_conn=self.redis):
            self.finished += 1
        if self.driver is not None:
            drop_build_credentials(self._nomad(watch), watch.job_id)

    # -- timers ------------------------------------------------------------------------------

    def timers(self, now: float) -> None:
        """Deadlines and progress notes, when due."""
        for watch in list(self.watched.values()):
            if now >= watch.deadline:
                if self.driver is not None:
                    try:
                        self._nomad(watch).stop_job(watch.job_id)
                    except NomadError as exc:
                        logger.warning("build job %s not stopped: %s", watch.job_id, exc)
                self._end(
                    watch,
                    BuildEnd(
                        False, "the build did not end within its time limits (HELIOS_BUILD_"
                        "TIMEOUT plus the fetch's) and was stopped",
                    ),
                )  # fmt: skip
            elif (
                watch.progress
                and watch.progress != watch.written
                and now - watch.written_at >= PROGRESS_INTERVAL
            ):
                note_build(watch.build_id, watch.progress, self.redis)
                watch.written, watch.written_at = watch.progress, now

    def beat(self) -> None:
        touch_builds(self.ids())


def _repository(watch: BuildWatch) -> str:
    build = Build.select(Build, App).join(App).where(Build.id == watch.build_id).get()
    return f"{build.app.team.slug}/{build.app.slug}"
