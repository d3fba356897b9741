"""The change count: one row the database itself increments whenever a table the dashboard
shows changes (``panel.db.track_changes`` adds the triggers after every migration run, so a
later migration that rebuilds a table cannot leave it uncounted)."""

import peewee as pw
from peewee_migrate import Migrator

TRIGGER_PREFIX = "count_change"


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create change_count with its one row."""

    @migrator.create_model
    class ChangeCount(pw.Model):
        n = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "change_count"

    migrator.sql("INSERT INTO change_count (id, n) VALUES (1, 0)")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop the triggers first (they write to change_count), then the table."""
    if isinstance(getattr(database, "obj", database), pw.PostgresqlDatabase):
        migrator.sql(f"DROP FUNCTION IF EXISTS {TRIGGER_PREFIX}() CASCADE")
    else:
        cursor = database.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?",
            (f"{TRIGGER_PREFIX}_%",),
        )
        for (name,) in cursor.fetchall():
            migrator.sql(f'DROP TRIGGER IF EXISTS "{name}"')
    migrator.remove_model("change_count")
