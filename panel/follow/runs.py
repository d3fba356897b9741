"""The follower's one-off runs: each registered run followed through its allocation's events.

The :class:`~panel.follow.follower.Follower` owns the event stream (topic ``Allocation``) and
its loop; this class keeps the runs it watches and decides what an allocation means:

- once the run's task started (or its allocation is over), its output is collected by the
  log collectors (:mod:`panel.logs.collect`) into the app's log, as the run's rows, scrubbed of
  the release's secrets and the app's current ones: nothing here waits on them;
- a complete allocation → succeeded (exit 0); a failed one → failed, with the command's exit
  code (or why it never ran: the image could not be pulled, the node was lost);
- a run still going at its timeout is stopped (its job deregistered) and ends ``timed_out``;
- on every (re)connect, each watched run's allocations are read once (a resync);
- either way the run's secrets variable is deleted from Nomad.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from panel.actions.logs import Appended, app_stream_offsets, append_app_log, end_app_stream
from panel.actions.runs import RunEnd, finish_run
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database
from panel.drivers.nomad import NomadDriver, NomadError
from panel.follow.batch import BatchJobs
from panel.logs.collect import LogCollectors, Sink
from panel.logs.runtime import event_line, release_scrubber
from panel.logs.scrub import Scrubber
from panel.models import App, OneOffRun, RunStatus, utcnow
from panel.reconcile.build_judge import newest
from panel.reconcile.runs import drop_run_secrets
from panel.render.run import RUN_GROUP, RUN_TASK

__all__ = ["RunSink", "RunWatch", "RunWatcher", "judge_run_allocation"]

logger = logging.getLogger(__name__)

_TERMINAL = ("complete", "failed", "lost")
OUTPUT_WAIT = 30  # seconds an ended run waits for the rest of its output before its exit line
_WHY_EVENTS = ("Driver Failure", "Failed Validation", "Setup Failure", "Template", "Killing")


@dataclass
class RunWatch:
    """One run the follower follows."""

    run_id: int
    app_id: int
    job_id: str
    deadline: float  # time.monotonic() at which its timeout stops it
    timeout_s: int
    seen_index: int = 0
    alloc_id: str = ""
    namespace: str = ""  # of its job ("": the driver's, NOMAD_NAMESPACE)


class RunSink:
    """A run's output: rows of the app's log that belong to the run."""

    def __init__(
        self, app_id: int, run_id: int, alloc: str, settings: Settings, redis_conn: redis.Redis
    ) -> None:
        self.app_id, self.run_id, self.alloc = app_id, run_id, alloc
        self.settings, self.redis = settings, redis_conn
        self.label = f"run #{run_id}"

    def offsets(self) -> dict[tuple[str, str], tuple[int, bool]]:
        return app_stream_offsets(self.alloc)

    def append(self, task: str, kind: str, text: str, *, after: int, offset: int) -> Appended:
        return append_app_log(
            self.app_id, None, alloc=self.alloc, process=RUN_GROUP, task=task, stream=kind,
            text=text, after=after, offset=offset, max_bytes=self.settings.log_max_bytes,
            redis_conn=self.redis, run_id=self.run_id,
        )  # fmt: skip

    def end(self, task: str, kind: str, *, offset: int) -> None:
        end_app_stream(
            self.app_id, None, alloc=self.alloc, process=RUN_GROUP, task=task, stream=kind,
            offset=offset, redis_conn=self.redis, run_id=self.run_id,
        )  # fmt: skip


def _exit_code(state: dict[str, Any]) -> int | None:
    for event in reversed(state.get("Events") or []):
        if event.get("Type") == "Terminated":
            try:
                return int(event.get("ExitCode"))
            except (TypeError, ValueError):
                return None
    return None


def judge_run_allocation(alloc: dict[str, Any]) -> RunEnd | None:
    """How a run's allocation ended (None: it has not)."""
    status = alloc.get("ClientStatus", "pending")
    if status not in _TERMINAL:
        return None
    state = (alloc.get("TaskStates") or {}).get(RUN_TASK) or {}
    if status == "lost":
        return RunEnd(RunStatus.FAILED, "the node running it stopped answering (allocation "
                      "lost): run the command again")  # fmt: skip
    code = _exit_code(state)
    if status == "complete" and (code or 0) == 0:
        return RunEnd(RunStatus.SUCCEEDED, "the command exited with code 0", exit_code=0)
    if code is not None and state.get("StartedAt"):
        return RunEnd(RunStatus.FAILED, f"the command exited with code {code}", exit_code=code)
    said = [event_line(e) for e in state.get("Events") or () if e.get("Type") in _WHY_EVENTS]
    why = said[-1] if said else "its task never started"
    return RunEnd(RunStatus.FAILED, f"the command did not run: {why}")


class RunWatcher(BatchJobs[RunWatch]):
    """The watched runs and what to do with their allocations (called from the loop only)."""

    def __init__(
        self, settings: Settings, redis_conn: redis.Redis, driver: NomadDriver | None,
        collectors: LogCollectors,
    ) -> None:  # fmt: skip
        super().__init__()
        self.settings, self.redis, self.driver = settings, redis_conn, driver
        self.logs = collectors
        self.finished = 0

    # -- which runs --------------------------------------------------------------------------

    def scan(self, *, resync: bool) -> None:
        """Watch every registered running run; forget those that ended elsewhere."""
        registered = (OneOffRun.status == RunStatus.RUNNING.value) & OneOffRun.nomad_job_id.is_null(
            False
        )
        rows = {row.id: row for row in OneOffRun.select().where(registered)}
        for run_id in list(self.watched):
            if run_id not in rows:
                self._forget(run_id)
        for run_id, row in sorted(rows.items()):
            if run_id not in self.watched:
                self._add(row, resync=resync)

    def watch_id(self, run_id: int, *, resync: bool) -> None:
        """A run job said Nomad accepted this run."""
        if run_id in self.watched:
            return
        row = OneOffRun.get_or_none(OneOffRun.id == run_id)
        if row is not None and row.status == RunStatus.RUNNING.value and row.registered:
            self._add(row, resync=resync)

    def _add(self, row: OneOffRun, *, resync: bool) -> None:
        age = max(0.0, (utcnow() - (row.started_at or row.requested_at)).total_seconds())
        watch = RunWatch(
            run_id=row.id, app_id=row.app_id, job_id=row.nomad_job_id,
            deadline=time.monotonic() + row.timeout_s - age, timeout_s=row.timeout_s,
            namespace=row.nomad_namespace or "",
        )  # fmt: skip
        self._track(row.id, watch)
        if resync:
            self.resync(watch)

    # -- what Nomad says ---------------------------------------------------------------------

    def resync(self, watch: RunWatch) -> None:
        """Read the run's allocations once (after a (re)connect, or when first watched)."""
        if self.driver is None:
            return
        allocations = self._allocations(watch)
        deciding = newest(allocations)
        if deciding is not None:
            self.on_allocation(self.driver.allocation(deciding["ID"]))
        elif self._nomad(watch).read_job(watch.job_id) is None:
            gone = f"Nomad has no job {watch.job_id!r} any more"
            self._end(watch, RunEnd(RunStatus.FAILED, gone))

    def on_allocation(self, alloc: dict[str, Any]) -> None:
        """An allocation changed: collect the task's output once it started; end the run once
        the allocation is over."""
        run_id = self.by_job.get(alloc.get("JobID", ""))
        watch = self.watched.get(run_id) if run_id is not None else None
        if watch is None:
            return
        index = alloc.get("ModifyIndex") or 0
        if index and index <= watch.seen_index and alloc.get("ID") == watch.alloc_id:
            return
        watch.seen_index, watch.alloc_id = index, alloc.get("ID", "")
        state = (alloc.get("TaskStates") or {}).get(RUN_TASK) or {}
        over = alloc.get("ClientStatus") in _TERMINAL
        started = over or state.get("StartedAt") or state.get("State") == "dead"
        if self.driver is not None and watch.alloc_id and started:
            alloc_id = watch.alloc_id
            self.logs.follow_tasks(
                ("run", watch.run_id), watch.job_id, alloc_id, [RUN_TASK],
                lambda: self._prepare(watch.run_id, alloc_id), track=True,
            )  # fmt: skip
        end = judge_run_allocation(alloc)
        if end is not None:
            # The exit line comes after the command's output: its collectors read to the end of
            # the finished task's streams first (a bounded wait, in a thread of its own).
            self._forget(watch.run_id)
            threading.Thread(
                target=self._end_after_output, args=(watch, end), daemon=True,
                name=f"run-{watch.run_id}-end",
            ).start()  # fmt: skip

    def _end_after_output(self, watch: RunWatch, end: RunEnd) -> None:
        if not self.logs.wait_for(("run", watch.run_id), watch.alloc_id, OUTPUT_WAIT):
            logger.warning("run #%d: its output was still being read after %d s; ending it",
                           watch.run_id, OUTPUT_WAIT)  # fmt: skip
        try:
            with database.connection_context():
                self._end(watch, end)
        except Exception:  # a thread of its own: say it, the sweep ends the run otherwise
            logger.exception("run #%d: could not record its end", watch.run_id)

    def _prepare(self, run_id: int, alloc_id: str) -> tuple[Sink, Scrubber] | None:
        """The run's sink and the scrubber of its release's secrets (None: the run is gone)."""
        run = OneOffRun.get_or_none(OneOffRun.id == run_id)
        if run is None:
            return None
        app = App.get_by_id(run.app_id)
        scrubber = release_scrubber(app, run.release, SecretCipher.from_settings(self.settings))
        return RunSink(app.id, run_id, alloc_id, self.settings, self.redis), scrubber

    def _end(self, watch: RunWatch, end: RunEnd) -> None:
        self._forget(watch.run_id)
        if self.driver is not None:  # its secrets go first: a finished run holds none
            drop_run_secrets(self._nomad(watch), watch.job_id)
        if finish_run(watch.run_id, end, redis_conn=self.redis):
            self.finished += 1

    # -- timers ------------------------------------------------------------------------------

    def timers(self, now: float) -> None:
        """Stop the runs whose timeout passed."""
        for watch in list(self.watched.values()):
            if now < watch.deadline:
                continue
            if self.driver is not None:
                try:
                    self._nomad(watch).stop_job(watch.job_id)
                except NomadError as exc:
                    logger.warning("run job %s not stopped: %s", watch.job_id, exc)
            self._end(
                watch,
                RunEnd(
                    RunStatus.TIMED_OUT, f"still running after its timeout of "
                    f"{watch.timeout_s} s: stopped (give a longer --timeout)",
                ),
            )  # fmt: skip
