"""The database: one proxy for every model, opened from a URL (SQLite or PostgreSQL)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit

import peewee as pw
from peewee_migrate import Router

__all__ = [
    "MIGRATIONS_DIR",
    "DatabaseError",
    "database",
    "migrate_down",
    "migrate_status",
    "migrate_up",
    "open_database",
]

logger = logging.getLogger(__name__)

database = pw.DatabaseProxy()
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 15_000
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    "foreign_keys": 1,
    "synchronous": "normal",
}


class DatabaseError(RuntimeError):
    """The database URL cannot be used; the message says how to fix it."""


def build_database(url: str) -> pw.Database:
    """A peewee database for a sqlite:/// or postgresql:// URL (not connected yet)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path:
            raise DatabaseError(f"{url!r}: write SQLite URLs as sqlite:////absolute/path.db")
        if path != "/:memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # BEGIN IMMEDIATE: a write transaction takes the lock when it starts, so two writers
        # wait on busy_timeout instead of failing with "database is locked" on upgrade.
        return pw.SqliteDatabase(
            path, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE", check_same_thread=False
        )
    if parts.scheme in {"postgres", "postgresql"}:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise DatabaseError(
                "PostgreSQL needs psycopg2: pip install 'helios[postgres]'"
            ) from None
        return pw.PostgresqlDatabase(
            unquote(parts.path.lstrip("/")) or "helios",
            user=unquote(parts.username or "") or None,
            password=unquote(parts.password or "") or None,
            host=parts.hostname or None,
            port=parts.port or 5432,
        )
    raise DatabaseError(
        f"unsupported database URL scheme {parts.scheme!r}: use sqlite:/// or postgresql://"
    )


def open_database(url: str) -> pw.Database:
    """Point the shared proxy at the database behind ``url`` and return it."""
    db = build_database(url)
    database.initialize(db)
    return db


def _router() -> Router:
    return Router(database, migrate_dir=MIGRATIONS_DIR, logger=logger)


def migrate_up() -> list[str]:
    """Apply every pending migration; return the names applied."""
    with database.connection_context():
        return _router().run()


def migrate_down(steps: int = 1) -> list[str]:
    """Roll back the newest ``steps`` migrations; return the names rolled back."""
    undone: list[str] = []
    with database.connection_context():
        router = _router()
        for _ in range(steps):
            done = router.done
            if not done:
                break
            router.rollback()
            undone.append(done[-1])
    return undone


def migrate_status() -> list[tuple[str, bool]]:
    """Every migration with whether it is applied, oldest first."""
    with database.connection_context():
        router = _router()
        applied = set(router.done)
        return [(name, name in applied) for name in router.todo]
