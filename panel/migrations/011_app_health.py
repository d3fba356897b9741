"""Live state: each app's health as last sampled, and its CPU and memory points."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create app_health and app_metric."""

    @migrator.create_model
    class AppHealth(pw.Model):
        app = pw.ForeignKeyField(migrator.orm["app"], on_delete="CASCADE", unique=True)
        state = pw.CharField(max_length=16)
        reason = pw.TextField(default="")
        wanted = pw.IntegerField(default=0)
        running = pw.IntegerField(default=0)
        healthy = pw.IntegerField(default=0)
        instances = pw.TextField(default="[]")
        changed_at = pw.DateTimeField()
        checked_at = pw.DateTimeField()

        class Meta:
            table_name = "app_health"

    @migrator.create_model
    class AppMetric(pw.Model):
        app = pw.ForeignKeyField(migrator.orm["app"], on_delete="CASCADE")
        resolution = pw.IntegerField()
        bucket = pw.BigIntegerField()
        samples = pw.IntegerField(default=0)
        cpu_sum = pw.FloatField(default=0.0)
        cpu_max = pw.FloatField(default=0.0)
        memory_sum = pw.BigIntegerField(default=0)
        memory_max = pw.BigIntegerField(default=0)
        cpu_limit = pw.FloatField(default=0.0)
        memory_limit = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "app_metric"
            indexes = ((("app", "resolution", "bucket"), True), (("resolution", "bucket"), False))


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    migrator.remove_model("app_metric")
    migrator.remove_model("app_health")
