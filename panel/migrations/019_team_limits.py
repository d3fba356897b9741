"""Per-team limits, enforced by Helios when an app is created, scaled, changed or deployed.

``team.limit_cpu_mhz``, ``limit_memory_mb`` (summed over every instance of the team's running
apps), ``limit_instances`` and ``limit_apps``: NULL means no limit. Site admins set them
(``helios teams limits``); ``panel.actions.limits`` checks them.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add the four limit columns to team."""
    migrator.add_fields(
        "team",
        limit_cpu_mhz=pw.IntegerField(null=True),
        limit_memory_mb=pw.IntegerField(null=True),
        limit_instances=pw.IntegerField(null=True),
        limit_apps=pw.IntegerField(null=True),
    )


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Undo migrate."""
    migrator.remove_fields(
        "team", "limit_cpu_mhz", "limit_memory_mb", "limit_instances", "limit_apps"
    )
