"""The RQ worker: runs reconcile jobs, one database connection per job.

Its work horse (the forked process that runs a job) and its scheduler process die with it,
even when it is SIGKILLed, so a killed worker leaves no process behind that still holds an
app's lock or writes to Nomad. Every few seconds it sweeps: deployments whose job was lost or
whose worker died are queued again (counted as attempts), provisioning runs likewise, and so
are purges of deleted apps (whose tombstones it removes past their retention, hourly).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing.util
import os
import signal
import sys
import time
from datetime import timedelta
from typing import Any

import peewee as pw
import redis
from rq import Worker
from rq.exceptions import InvalidJobOperation
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue

from panel.config import Settings
from panel.db import database, refresh_statistics
from panel.models import utcnow
from panel.queue import get_queue
from panel.reconcile.backup import schedule_backup
from panel.reconcile.deletion import resume_deletions
from panel.reconcile.domains import check_domains_if_due
from panel.reconcile.drift import schedule_drift_check
from panel.reconcile.host_drain import resume_drains
from panel.reconcile.notifications import resume_notifications
from panel.reconcile.observe import sample_if_due
from panel.reconcile.provision import resume_provisioning
from panel.run.redis_server import stop_with_parent
from panel.run.runtime import JsonStderr, Process, logs_json

__all__ = ["HeliosWorker", "run_worker"]

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 5  # seconds between sweeps for deployments a lost job or a dead worker left


def _die_with(parent_pid: int) -> None:
    """In a child of the worker: get SIGTERM when the worker dies; exit if it already has."""
    stop_with_parent()
    if os.getppid() != parent_pid:  # it died between fork() and prctl()
        os._exit(1)


def _scheduler_forked(worker_pid: int) -> None:
    """In RQ's scheduler process, right after its fork: die with the worker, and let SIGTERM
    and SIGINT stop it until RQ installs its own handlers. It inherits the worker's handlers,
    which act on the worker's copy: a stop sent in that window was lost, and the worker,
    joining the scheduler, hung until it was killed."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _die_with(worker_pid)
    if logs_json():  # a failure of the scheduler is printed by multiprocessing, not logged
        sys.stderr = JsonStderr(sys.stderr, "scheduler")


class HeliosWorker(Worker):
    """An RQ worker whose work horse opens its own database connection for each job, whose
    children die with it, and that sweeps unfinished deployments every SWEEP_INTERVAL."""

    settings: Settings

    @property
    def dequeue_timeout(self) -> int:
        # RQ waits up to ~400 s for a job before looking at its maintenance tasks; the sweep
        # must run every SWEEP_INTERVAL seconds, also on an idle worker.
        return min(super().dequeue_timeout, SWEEP_INTERVAL)

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        self._worker_pid = os.getpid()
        super().fork_work_horse(job, queue)
        self._last_horse_pid = self.horse_pid  # in the worker (the horse never returns here)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        # The horse puts itself in a process group of its own: killing the worker's group
        # does not reach it, the kernel's parent-death signal does.
        _die_with(self._worker_pid)
        super().main_work_horse(job, queue)

    def _start_scheduler(self, *args: Any, **kwargs: Any) -> None:
        # RQ's scheduler (it moves due retries to the queue) is a multiprocessing child,
        # which runs the functions registered here right after its fork.
        worker_pid = os.getpid()
        multiprocessing.util.register_after_fork(self, lambda _w: _scheduler_forked(worker_pid))
        super()._start_scheduler(*args, **kwargs)

    def subscribe(self) -> None:
        # RQ's own, with the command listener waking every second instead of every 60: on
        # stop, RQ joins that thread without a timeout, so a stopped worker hung up to 60 s.
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def _shutdown(self) -> None:
        # RQ stops an idle worker by raising StopRequested from the signal handler; when the
        # signal lands inside code that catches Exception (a logging handler emitting a line,
        # a library's retry loop), that exception is swallowed and the stop was lost until a
        # second signal. The flag is checked by the work loop at least every SWEEP_INTERVAL.
        self._stop_requested = True
        super()._shutdown()

    def execute_job(self, job: Job, queue: Queue) -> None:
        # Timed here, in the worker, not in the work horse: the horse may be killed. A horse
        # that recorded metrics itself (a deployment's end) left files: once RQ reaped it
        # (horse_pid back to 0), they are folded into the metrics archive and removed.
        started = time.monotonic()
        self._last_horse_pid = 0
        try:
            super().execute_job(job, queue)
        finally:
            _record_job(job, time.monotonic() - started)
            if self._last_horse_pid and not self.horse_pid:
                _archive_horse(self._last_horse_pid)

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        with database.connection_context():
            return super().perform_job(job, queue, execution)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        resume_deployments(self.connection, self.settings)
        resume_provisioning(self.connection, self.settings)
        resume_drains(self.connection)
        prune_logs(self.connection, self.settings)
        refresh_planner_statistics(self.connection)
        resume_deletions(self.connection, self.settings)
        resume_notifications(self.connection)
        schedule_drift_check(self.connection, self.settings)
        sample_if_due(self.connection, self.settings)
        check_domains_if_due(self.connection, self.settings)
        schedule_backup(self.connection, self.settings)


def _record_job(job: Job, seconds: float) -> None:
    """Count a job that ran in a work horse by the state it ended in (never raises)."""
    from panel.metrics import observe_job

    try:
        status = job.get_status(refresh=True)
    except InvalidJobOperation:  # removed at once after success (result_ttl=0)
        status = JobStatus.FINISHED
    except redis.RedisError as exc:
        logger.warning("job %s not counted in metrics: %s", job.id, exc)
        return
    observe_job(job.func_name, seconds, finished=status == JobStatus.FINISHED)


def _archive_horse(pid: int) -> None:
    """Fold a reaped work horse's metrics files into the archive (never raises)."""
    from panel.metrics import forget_process

    try:
        forget_process(pid)
    except OSError as exc:
        logger.warning("metrics files of work horse %d left in place: %s", pid, exc)


PRUNE_LOCK = "helios:prune:logs"  # one worker removes old log lines, once an hour


def prune_logs(connection: redis.Redis, settings: Settings) -> int:
    """Remove log lines older than HELIOS_LOG_RETENTION_DAYS, at most once an hour across the
    workers; how many (never raises)."""
    from panel.actions.logs import prune_app_logs, prune_build_logs

    try:
        if not connection.set(PRUNE_LOCK, os.getpid(), nx=True, ex=3600):
            return 0
        before = utcnow() - timedelta(days=settings.log_retention_days)
        with database.connection_context():
            removed = prune_app_logs(before) + prune_build_logs(before)
    except (pw.PeeweeException, redis.RedisError) as exc:
        logger.warning("could not remove old log lines now: %s", exc)
        return 0
    if removed:
        logger.info("removed %d log lines older than %d days", removed,
                    settings.log_retention_days)  # fmt: skip
    return removed


STATISTICS_LOCK = "helios:db:statistics"  # one worker refreshes them, once an hour


def refresh_planner_statistics(connection: redis.Redis) -> bool:
    """Refresh the database's query-planner statistics at most once an hour across the
    workers (:func:`panel.db.refresh_statistics`); True when this call did (never raises)."""
    try:
        if not connection.set(STATISTICS_LOCK, os.getpid(), nx=True, ex=3600):
            return False
        refresh_statistics()
    except (pw.PeeweeException, redis.RedisError) as exc:
        logger.warning("could not refresh the database's statistics now: %s", exc)
        return False
    return True


def resume_deployments(connection: redis.Redis, settings: Settings) -> None:
    """Sweep deployments left unfinished by a crash or a Redis restart (never raises)."""
    from panel.reconcile.builds import sweep_builds
    from panel.reconcile.jobs import stale_after, sweep_deployments
    from panel.reconcile.runs import sweep_runs

    try:
        with database.connection_context():
            sweep_deployments(connection, settings)
            sweep_builds(connection, settings, stale_after(settings))
            sweep_runs(connection)
    except (pw.PeeweeException, redis.RedisError) as exc:  # a sweep never stops the worker
        logger.warning("could not sweep unfinished deployments now: %s", exc)


FOLLOWER_NAME = b"helios-follower"  # the forked follower's process name (ps -o comm, top)
FOLLOWER_STOP_TIMEOUT = 15  # seconds the forked follower gets to stop before it is killed


def run_worker(process: Process, *, burst: bool = False, follower: bool = False) -> int:
    """Work the configured queues until asked to stop; return the exit code.

    With ``follower`` (what ``helios up`` asks for) the follower runs too, in a child forked
    before any job, like RQ's scheduler: it shares the worker's loaded code instead of
    loading its own copy (about 50 MB). The worker stops it when it stops, and stops (exit 1)
    when it ends on its own.
    """
    # Imported and prepared once here, so each forked work horse starts with them ready.
    import panel.reconcile.builds
    import panel.reconcile.jobs  # noqa: F401
    from panel.events import prepare_validators

    prepare_validators()

    queues = [get_queue(process.redis, name) for name in process.settings.queues]
    worker = HeliosWorker(queues, connection=process.redis, maintenance_interval=SWEEP_INTERVAL)
    worker.settings = process.settings
    reaped: list[int] = []  # the forked follower's exit code, once it ended
    failed: list[int] = []  # its pid, when it ended with no stop asked for

    def stop_before_work(_signum: int, _frame: object) -> None:
        # Until RQ installs its own handlers inside work(), a stop request is just noted: its
        # loop checks this flag before taking the first job, so the worker exits 0 at once.
        worker._stop_requested = True

    signal.signal(signal.SIGTERM, stop_before_work)
    signal.signal(signal.SIGINT, stop_before_work)
    follower_pid = _fork_follower(process) if follower else 0
    if follower_pid:

        def follower_ended(_signum: int, _frame: object) -> None:
            # Every child's end lands here (work horses, the scheduler): only the follower's
            # is collected, and only once.
            if reaped:
                return
            try:
                pid, status = os.waitpid(follower_pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid != follower_pid:
                return
            reaped.append(os.waitstatus_to_exitcode(status))
            _archive_horse(pid)  # its metrics files, like a work horse's
            if worker._stop_requested:
                return  # a stop under way reached it too (Ctrl-C reaches the whole group)
            failed.append(pid)
            logger.error("the follower (pid %d) exited with %s; stopping", pid, reaped[0])
            if signal.getsignal(signal.SIGTERM) is stop_before_work:
                worker._stop_requested = True  # work() has not begun: it stops before any job
            else:
                worker.request_stop(signal.SIGTERM, None)  # a warm stop, as on SIGTERM

        signal.signal(signal.SIGCHLD, follower_ended)
    resume_deployments(process.redis, process.settings)
    resume_provisioning(process.redis, process.settings)
    logger.info("worker listening on %s", ", ".join(process.settings.queues))
    # RQ installs its own SIGTERM/SIGINT handlers: a warm shutdown that lets the current job
    # finish, then returns from work(); a second signal stops at once.
    try:
        worker.work(
            burst=burst,
            with_scheduler=True,
            logging_level=process.settings.log_level.upper(),
        )
    finally:
        if follower_pid:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            if not reaped:
                _stop_follower(follower_pid)
    logger.info("worker stopped")
    return 1 if failed else 0


def _fork_follower(process: Process) -> int:
    """Fork the follower off this worker, before it takes any job; its pid."""
    import panel.follow.follower  # noqa: F401 - loaded here, shared with the child

    process.database.close()  # the child opens its own; none is shared across the fork
    sys.stdout.flush()
    sys.stderr.flush()
    worker_pid = os.getpid()
    pid = os.fork()
    if pid:
        logger.info("follower forked (pid %d)", pid)
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the follower installs its own
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with(worker_pid)
        _name_process(FOLLOWER_NAME)
        from panel.follow import run_follower
        from panel.run.runtime import start_process

        code = run_follower(start_process("follower", process.settings))
    except BaseException:  # a child forked off the worker never returns into its code
        logger.exception("the follower failed")
    finally:
        logging.shutdown()
        os._exit(code)


def _name_process(name: bytes) -> None:
    """Set this process's name as `ps -o comm` and top show it (Linux; best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME


def _stop_follower(pid: int) -> None:
    """Ask the forked follower to stop; kill it if it has not within FOLLOWER_STOP_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + FOLLOWER_STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            _archive_horse(pid)
            return
        time.sleep(0.05)
    logger.warning("the follower (pid %d) did not stop in %d s; killing it", pid,
                   FOLLOWER_STOP_TIMEOUT)  # fmt: skip
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
