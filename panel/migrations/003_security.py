"""Security: server-side sessions, tokens minted by tokens, pinned SSH host keys, run heartbeats,
events about one person."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create user_session; add api_token.parent, host keys, run heartbeat and event.user."""

    @migrator.create_model
    class UserSession(pw.Model):
        id = pw.AutoField()
        user = pw.ForeignKeyField(
            column_name="user_id", field="id", model=migrator.orm["user"], on_delete="CASCADE"
        )
        token_hash = pw.CharField(max_length=64, unique=True)
        address = pw.CharField(default="", max_length=64)
        user_agent = pw.CharField(default="", max_length=200)
        created_at = pw.DateTimeField()
        last_seen_at = pw.DateTimeField()
        revoked_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "user_session"

    migrator.add_fields(
        "api_token",
        parent=pw.ForeignKeyField(
            column_name="parent_id",
            field="id",
            model=migrator.orm["api_token"],
            null=True,
            on_delete="CASCADE",
        ),
    )
    migrator.add_fields(
        "host",
        ssh_host_keys=pw.TextField(default=""),
        ssh_host_keys_pinned_at=pw.DateTimeField(null=True),
    )
    migrator.add_fields("provision_run", heartbeat_at=pw.DateTimeField(null=True))
    migrator.add_fields(
        "event",
        user=pw.ForeignKeyField(
            column_name="user_id",
            field="id",
            model=migrator.orm["user"],
            null=True,
            on_delete="SET NULL",
        ),
    )


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    # SQLite cannot drop a column that an index still names: the foreign keys' indexes first.
    migrator.drop_index("event", "user")
    migrator.remove_fields("event", "user")
    migrator.remove_fields("provision_run", "heartbeat_at")
    migrator.remove_fields("host", "ssh_host_keys", "ssh_host_keys_pinned_at")
    migrator.drop_index("api_token", "parent")
    migrator.remove_fields("api_token", "parent")
    migrator.remove_model("user_session")
