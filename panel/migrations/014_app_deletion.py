"""App deletion: a deleted app stays as a tombstone row (its history readable for
HELIOS_DELETED_APP_RETENTION_DAYS) and frees its name at once.

The slug's unique index becomes partial (``WHERE deleted_at IS NULL``; SQLite and PostgreSQL
both have partial indexes), so only live apps compete for a name while a tombstone keeps its
own, readable one. ``purged_at`` is when its Nomad job and variable were found gone;
``purge_attempts`` and ``purge_note`` follow the purge job's tries (see panel.reconcile.deletion).
"""

import peewee as pw
from peewee_migrate import Migrator

LIVE_SLUG_INDEX = "app_slug_live"


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add the tombstone columns; make the slug unique among live apps only."""
    migrator.add_fields(
        "app",
        deleted_at=pw.DateTimeField(null=True),
        deleted_by=pw.CharField(max_length=300, default=""),
        purged_at=pw.DateTimeField(null=True),
        purge_attempts=pw.IntegerField(default=0),
        purge_note=pw.TextField(default=""),
    )
    migrator.drop_index("app", "slug")
    migrator.sql(f"CREATE UNIQUE INDEX {LIVE_SLUG_INDEX} ON app (slug) WHERE deleted_at IS NULL")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Undo migrate. Tombstones are removed first: the old index allows one row per name."""
    migrator.sql("DELETE FROM app WHERE deleted_at IS NOT NULL")
    migrator.sql(f"DROP INDEX {LIVE_SLUG_INDEX}")
    migrator.add_index("app", "slug", unique=True)
    migrator.remove_fields(
        "app", "deleted_at", "deleted_by", "purged_at", "purge_attempts", "purge_note"
    )
