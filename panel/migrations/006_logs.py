"""Build logs: the scrubbed output of builds, chunk by chunk."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create log_chunk."""

    @migrator.create_model
    class LogChunk(pw.Model):
        build = pw.ForeignKeyField(migrator.orm["build"], on_delete="CASCADE")
        seq = pw.IntegerField()
        task = pw.CharField(max_length=16)
        stream = pw.CharField(max_length=8)
        text = pw.TextField(default="")
        size = pw.IntegerField(default=0)
        offset = pw.BigIntegerField(default=0)
        final = pw.BooleanField(default=False)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "log_chunk"
            indexes = ((("build", "seq"), True), (("build", "task", "stream", "offset"), False))


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    migrator.remove_model("log_chunk")
