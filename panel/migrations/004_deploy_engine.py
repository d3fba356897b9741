"""Deploy engine: attempts and heartbeats of deployments, the follower's event cursor."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add deployment.attempts and deployment.heartbeat_at; create follower_cursor."""
    migrator.add_fields(
        "deployment",
        attempts=pw.IntegerField(default=0),
        heartbeat_at=pw.DateTimeField(null=True),
    )

    @migrator.create_model
    class FollowerCursor(pw.Model):
        name = pw.CharField(max_length=255, primary_key=True)
        event_index = pw.BigIntegerField(default=0)
        updated_at = pw.DateTimeField()

        class Meta:
            table_name = "follower_cursor"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    migrator.remove_model("follower_cursor")
    migrator.remove_fields("deployment", "attempts", "heartbeat_at")
