"""Migrations: apply all, roll all back, apply again; the models match the migrated schema."""

from __future__ import annotations

import peewee as pw

from panel.db import migrate_down, migrate_status, migrate_up, open_database
from panel.models import MODELS

MIGRATIONS = [
    "001_initial", "002_provisioning", "003_security", "004_deploy_engine", "005_builds",
    "006_logs",
    "007_app_logs",
    "008_notifiers",
    "009_drift",
    "011_app_health",
    "012_domain_state",
    "014_app_deletion",
]  # fmt: skip


def _tables(database: pw.Database) -> set[str]:
    return {t for t in database.get_tables() if t != "migratehistory"}


def _columns(database: pw.Database, table: str) -> set[str]:
    return {column.name for column in database.get_columns(table)}


def test_round_trip_up_down_up(any_database_url):
    database = open_database(any_database_url)
    expected = {model._meta.table_name for model in MODELS}

    assert [applied for _, applied in migrate_status()] == [False] * len(MIGRATIONS)
    assert migrate_up() == MIGRATIONS
    with database.connection_context():
        assert _tables(database) == expected
    assert all(applied for _, applied in migrate_status())
    assert migrate_up() == []

    undone = migrate_down(steps=len(migrate_status()))
    assert undone == MIGRATIONS[::-1]
    with database.connection_context():
        assert _tables(database) == set()
    assert migrate_down() == []

    assert migrate_up() == MIGRATIONS
    with database.connection_context():
        assert _tables(database) == expected
    database.close()


def test_models_match_the_migrated_schema(any_database_url):
    database = open_database(any_database_url)
    migrate_up()
    with database.connection_context():
        for model in MODELS:
            fields = {field.column_name for field in model._meta.sorted_fields}
            assert _columns(database, model._meta.table_name) == fields, model.__name__
    database.close()
