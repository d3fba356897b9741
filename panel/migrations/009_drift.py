"""Drift: per app, how its job in Nomad compares with what Helios would render now."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create app_drift."""

    @migrator.create_model
    class AppDrift(pw.Model):
        app = pw.ForeignKeyField(migrator.orm["app"], unique=True, on_delete="CASCADE")
        state = pw.CharField(max_length=16, index=True)
        diff = pw.TextField(default="")
        deployment = pw.ForeignKeyField(migrator.orm["deployment"], null=True, on_delete="SET NULL")
        checked_at = pw.DateTimeField()
        detected_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "app_drift"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    migrator.remove_model("app_drift")
