"""App logs: the scrubbed deploy and runtime logs of apps, per deployment."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create app_log."""

    @migrator.create_model
    class AppLog(pw.Model):
        app = pw.ForeignKeyField(migrator.orm["app"], on_delete="CASCADE")
        seq = pw.IntegerField()
        deployment = pw.ForeignKeyField(migrator.orm["deployment"], null=True, on_delete="CASCADE")
        alloc = pw.CharField(max_length=36, default="")
        process = pw.CharField(max_length=64, default="")
        task = pw.CharField(max_length=64, default="")
        stream = pw.CharField(max_length=8)
        text = pw.TextField(default="")
        size = pw.IntegerField(default=0)
        offset = pw.BigIntegerField(default=0)
        final = pw.BooleanField(default=False)
        created_at = pw.DateTimeField(index=True)

        class Meta:
            table_name = "app_log"
            indexes = (
                (("app", "seq"), True),
                (("deployment", "seq"), False),
                (("alloc", "task", "stream", "offset"), False),
            )


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    migrator.remove_model("app_log")
