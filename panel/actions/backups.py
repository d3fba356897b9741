"""Backups and restores of the whole installation, by an operator or on a schedule.

`helios backup` and the worker's scheduled backup call :func:`create_backup`; `helios restore`
calls :func:`restore_installation`. Only operators (and the server's shell) may: a backup holds
the key to every secret. Each is recorded in the audit log (``v1.backup.created``, and
``v1.backup.restored`` in the restored database), visible to operators.
"""

from __future__ import annotations

from pathlib import Path

import redis

from panel.actions.common import actor_name, authorize_operator
from panel.backup import BackupResult, RestoreResult, restore_backup, write_backup
from panel.config import Settings
from panel.db import database
from panel.events import emit
from panel.models import User

__all__ = ["create_backup", "restore_installation"]


def create_backup(
    *,
    actor: User | None,
    target: Path,
    settings: Settings,
    force: bool = False,
    scheduled: bool = False,
    redis_conn: redis.Redis | None = None,
) -> BackupResult:
    """Write a backup to ``target`` and record it (``v1.backup.created``)."""
    authorize_operator(actor)
    result = write_backup(settings, target, force=force)
    emit(
        "v1.backup.created",
        {
            "file": result.path.name[:255],
            "size": result.size,
            "database": result.manifest["database"]["kind"],
            "scheduled": scheduled,
            "counts": result.counts,
        },
        actor="system" if scheduled else actor_name(actor),
        redis_conn=redis_conn,
    )
    return result


def restore_installation(
    *, actor: User | None, source: Path, settings: Settings, force: bool = False
) -> RestoreResult:
    """Restore the backup ``source`` and record it in the restored audit log (the database
    proxy points at the restored database afterwards)."""
    authorize_operator(actor)
    result = restore_backup(settings, source, force=force)
    with database.connection_context():
        emit(
            "v1.backup.restored",
            {
                "file": Path(source).name[:255],
                "created_at": result.manifest.created_at[:40],
                "helios_version": result.manifest.helios_version[:40],
                "migrated": len(result.migrated),
                "replaced": force,
            },
            actor=actor_name(actor),
        )
    return result
