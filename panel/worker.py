"""The RQ worker: runs reconcile jobs, one database connection per job."""

from __future__ import annotations

import logging

from rq import Worker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue

from panel.db import database
from panel.queue import get_queue
from panel.runtime import Process

__all__ = ["HeliosWorker", "run_worker"]

logger = logging.getLogger(__name__)


class HeliosWorker(Worker):
    """An RQ worker whose work horse opens its own database connection for each job."""

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        with database.connection_context():
            return super().perform_job(job, queue, execution)


def run_worker(process: Process, *, burst: bool = False) -> int:
    """Work the configured queues until asked to stop; return the exit code."""
    queues = [get_queue(process.redis, name) for name in process.settings.queues]
    worker = HeliosWorker(queues, connection=process.redis)
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
