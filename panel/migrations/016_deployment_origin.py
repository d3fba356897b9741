"""Why a deployment was asked for and by whom, kept on the row for the history tables.

``deployment.reason``: deploy, build, redelivery, rollback, reapply, restart or start;
``deployment.requested_by``: the person's email, ``operator NAME (local shell)`` for a command
run at the server, or ``build of <sha>`` for a build's deploy. Rows older than this migration
keep both empty (the history then says what it always said).
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add reason and requested_by to deployment."""
    migrator.add_fields(
        "deployment",
        reason=pw.CharField(max_length=32, default=""),
        requested_by=pw.CharField(max_length=300, default=""),
    )


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Undo migrate."""
    migrator.remove_fields("deployment", "reason", "requested_by")
