"""Scheduled backups: one worker queues a backup every HELIOS_BACKUP_INTERVAL seconds into
HELIOS_BACKUP_DIR, and the job keeps the newest HELIOS_BACKUP_KEEP of them."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import redis
from rq import get_current_job

from panel.actions.backups import create_backup
from panel.backup import BackupError
from panel.backup_manifest import backup_file_name, to_prune
from panel.config import Settings
from panel.queue import connect_redis, get_queue

__all__ = ["prune_backups", "run_scheduled_backup", "schedule_backup"]

logger = logging.getLogger(__name__)

BACKUP_JOB = "panel.reconcile.backup.run_scheduled_backup"
SCHEDULE_LOCK = "helios:backup:scheduled"  # set for HELIOS_BACKUP_INTERVAL seconds per backup
BACKUP_JOB_TIMEOUT = 3600  # seconds one backup may take (pg_dump of a large database)


def prune_backups(folder: Path, keep: int) -> list[str]:
    """Remove the oldest scheduled backups in ``folder`` beyond ``keep``; the names removed."""
    removed = []
    for name in to_prune(os.listdir(folder), keep):
        (folder / name).unlink(missing_ok=True)
        removed.append(name)
    return removed


def run_scheduled_backup() -> str:
    """RQ job: write a backup into HELIOS_BACKUP_DIR, then prune to HELIOS_BACKUP_KEEP."""
    settings = Settings.from_env()
    if not settings.backup_dir:
        return "scheduled backups are off (HELIOS_BACKUP_DIR is empty)"
    folder = Path(settings.backup_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    target = folder / backup_file_name(datetime.now(UTC))
    try:
        result = create_backup(actor=None, target=target, settings=settings, scheduled=True,
                               redis_conn=redis_conn)  # fmt: skip
    except BackupError as exc:
        logger.error("scheduled backup to %s failed: %s", target, exc)
        raise
    removed = prune_backups(folder, settings.backup_keep)
    logger.info("backup written: %s (%d bytes); %d old one(s) removed", target, result.size,
                len(removed))  # fmt: skip
    return f"{target.name}: {result.size} bytes, {len(removed)} old removed"


def schedule_backup(connection: redis.Redis, settings: Settings) -> bool:
    """From the worker's maintenance: queue a backup once per HELIOS_BACKUP_INTERVAL across
    all workers (HELIOS_BACKUP_DIR empty: never); True when this call queued one. Never
    raises."""
    if not settings.backup_dir:
        return False
    queue = "default" if "default" in settings.queues else settings.queues[-1]
    try:
        if not connection.set(SCHEDULE_LOCK, os.getpid(), nx=True, ex=settings.backup_interval):
            return False
        get_queue(connection, queue).enqueue(
            BACKUP_JOB, job_timeout=BACKUP_JOB_TIMEOUT, description="scheduled backup"
        )
    except redis.RedisError as exc:
        logger.warning("could not queue the scheduled backup now: %s", exc)
        return False
    return True
