"""Scale, stop and start: an app stopped by a person, and the instance count a deployment runs.

``app.stopped_at``/``stopped_by``: when and by whom the app was stopped (its Nomad job stopped,
not purged); NULL while it runs. ``deployment.instance_count``: the number of instances the
deployment runs when a scale changed it after it was registered (or a restart carried a scaled
count over); NULL means its release's count (see panel.actions.lifecycle).
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add the stopped columns to app and the instance count to deployment."""
    migrator.add_fields(
        "app",
        stopped_at=pw.DateTimeField(null=True),
        stopped_by=pw.CharField(max_length=300, default=""),
    )
    migrator.add_fields("deployment", instance_count=pw.IntegerField(null=True))


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Undo migrate."""
    migrator.remove_fields("deployment", "instance_count")
    migrator.remove_fields("app", "stopped_at", "stopped_by")
