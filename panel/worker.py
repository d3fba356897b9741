"""The RQ worker: runs reconcile jobs, one database connection per job."""

from __future__ import annotations

import logging
import signal

import peewee as pw
import redis
from rq import Worker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue

from panel.config import Settings
from panel.db import database
from panel.queue import get_queue
from panel.reconcile.provision import resume_provisioning
from panel.runtime import Process

__all__ = ["HeliosWorker", "run_worker"]

logger = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 60  # seconds between sweeps for deployments a lost job left behind


class HeliosWorker(Worker):
    """An RQ worker whose work horse opens its own database connection for each job, and
    that queues unfinished deployments again when it starts and at each maintenance pass."""

    settings: Settings

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        with database.connection_context():
            return super().perform_job(job, queue, execution)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        resume_deployments(self.connection, self.settings)
        resume_provisioning(self.connection, self.settings)


def resume_deployments(connection: redis.Redis, settings: Settings) -> None:
    """Queue deployments left unfinished by a crash or a Redis restart (never raises)."""
    from panel.reconcile.jobs import resume_unfinished

    try:
        with database.connection_context():
            resume_unfinished(connection, settings)
    except (pw.PeeweeException, redis.RedisError) as exc:  # a sweep never stops the worker
        logger.warning("could not resume unfinished deployments now: %s", exc)


def run_worker(process: Process, *, burst: bool = False) -> int:
    """Work the configured queues until asked to stop; return the exit code."""
    queues = [get_queue(process.redis, name) for name in process.settings.queues]
    worker = HeliosWorker(
        queues, connection=process.redis, maintenance_interval=MAINTENANCE_INTERVAL
    )
    worker.settings = process.settings

    def stop_before_work(_signum: int, _frame: object) -> None:
        # Until RQ installs its own handlers inside work(), a stop request is just noted: its
        # loop checks this flag before taking the first job, so the worker exits 0 at once.
        worker._stop_requested = True

    signal.signal(signal.SIGTERM, stop_before_work)
    signal.signal(signal.SIGINT, stop_before_work)
    resume_deployments(process.redis, process.settings)
    resume_provisioning(process.redis, process.settings)
    logger.info("worker listening on %s", ", ".join(process.settings.queues))
    # RQ installs its own SIGTERM/SIGINT handlers: a warm shutdown that lets the current job
    # finish, then returns from work(); a second signal stops at once.
    worker.work(
        burst=burst,
        with_scheduler=True,
        logging_level=process.settings.log_level.upper(),
    )
    logger.info("worker stopped")
    return 0
