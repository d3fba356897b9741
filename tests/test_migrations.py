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
    "013_one_off_runs",
    "014_app_deletion",
    "015_app_lifecycle",
    "016_deployment_origin",
    "017_host_removal",
    "018_change_count",
    "019_team_limits",
    "020_team_namespaces",
    "021_cluster_credentials",
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


# A populated installation of the first schema: rows written as 001_initial's tables take them.
FIRST_ROWS = [
    ("team", ["slug", "name", "created_at"], ["acme", "Acme", "2026-01-02 03:04:05"]),
    ("user", ["email", "password_hash", "is_operator", "is_active", "created_at", "name"],
     ["dev@example.com", "$argon2id$v=19$x", False, True, "2026-01-02 03:04:05", "Dev"]),
    ("membership", ["user_id", "team_id", "role", "created_at"],
     [1, 1, "owner", "2026-01-02 03:04:05"]),
    ("api_token", ["user_id", "name", "token_hash", "prefix", "scopes", "created_at"],
     [1, "ci", "ab" * 32, "hel_abcd", '["deploy"]', "2026-01-02 03:04:05"]),
    ("app", ["team_id", "slug", "image", "created_at", "updated_at", "count", "branch",
             "command", "port", "health_path", "cpu_mhz", "memory_mb", "memory_max_mb"],
     [1, "web", "registry.local/web:1", "2026-01-02 03:04:05", "2026-01-02 03:04:05", 3, "main",
      "", 8080, "/healthz", 250, 256, 0]),
    ("release", ["app_id", "number", "image", "config", "created_at", "git_sha"],
     [1, 1, "registry.local/web:1", '{"image": "registry.local/web:1"}', "2026-01-02 03:04:05",
      ""]),
    ("deployment", ["app_id", "release_id", "status", "requested_at", "status_message"],
     [1, 1, "succeeded", "2026-01-02 03:04:06", "done"]),
    ("domain", ["app_id", "hostname", "created_at"], [1, "web.example.com", "2026-01-02 03:04:05"]),
    ("env_var", ["app_id", "key", "value", "is_secret", "updated_at"],
     [1, "DATABASE_URL", "gAAAA-ciphertext", True, "2026-01-02 03:04:05"]),
    ("event", ["subject", "actor", "team_id", "data", "created_at"],
     ["v1.app.created", "dev@example.com", 1, '{"app": "web"}', "2026-01-02 03:04:05"]),
]  # fmt: skip


def test_a_populated_first_schema_upgrades_without_losing_rows(any_database_url):
    from panel.db import _router as router
    from panel.db import database

    handle = open_database(any_database_url)
    with handle.connection_context():
        assert router().run(MIGRATIONS[0]) == [MIGRATIONS[0]]
        for table, columns, values in FIRST_ROWS:
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join([database.param] * len(values))
            # Names from FIRST_ROWS above, values as parameters.
            insert = f'INSERT INTO "{table}" ({names}) VALUES ({marks})'  # noqa: S608
            handle.execute_sql(insert, values)
    assert migrate_up() == MIGRATIONS[1:]
    from panel.models import ApiToken, App, Deployment, Domain, EnvVar, Event, Release, User

    with handle.connection_context():
        for model in (User, ApiToken, App, Release, Deployment, Domain, EnvVar, Event):
            assert model.select().count() == 1, model.__name__
        app = App.get()
        assert (app.slug, app.count, app.team.slug, app.deleted_at) == ("web", 3, "acme", None)
        assert Release.get().config == {"image": "registry.local/web:1"}
        deployment = Deployment.get()
        assert (deployment.status, deployment.release.number, deployment.reason) == (
            "succeeded", 1, "")  # fmt: skip
        assert EnvVar.get().value == "gAAAA-ciphertext" and EnvVar.get().is_secret
        assert ApiToken.get().scopes == ["deploy"] and User.get().email == "dev@example.com"
