"""The database: one proxy for every model, opened from a URL (SQLite or PostgreSQL)."""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

if TYPE_CHECKING:
    from peewee_migrate import Router

__all__ = [
    "CHANGE_TRACKED_TABLES",
    "MIGRATIONS_DIR",
    "DatabaseError",
    "change_count",
    "database",
    "migrate_down",
    "migrate_status",
    "migrate_up",
    "open_database",
    "refresh_statistics",
    "track_changes",
]

logger = logging.getLogger(__name__)

database = pw.DatabaseProxy()
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 15_000
PRIVATE_FILE_MODE = 0o600  # the SQLite file; SQLite gives its -wal and -shm the same mode
PRIVATE_DIR_MODE = 0o700  # a folder Helios creates for its database
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    "foreign_keys": 1,
    "synchronous": "normal",
}


class DatabaseError(RuntimeError):
    """The database URL cannot be used; the message says how to fix it."""


COOPERATIVE_BUSY_TIMEOUT_MS = 20  # SQLite's own wait, in C, for one try
COOPERATIVE_PAUSES = (0.005, 0.01, 0.02, 0.05, 0.1)  # seconds between tries, growing


def _locked(error: Exception) -> bool:
    return "database is locked" in str(error) or "database is busy" in str(error)


class CooperativeSqliteDatabase(pw.SqliteDatabase):
    """SQLite for the panel's gevent workers: waiting for another process's write lock.

    SQLite waits for a lock inside its C code (busy_timeout), where no other greenlet can run:
    one sign-in waiting there would stall every request and live stream of its worker. Here
    SQLite waits COOPERATIVE_BUSY_TIMEOUT_MS at most, then the wait goes on in Python, with
    ``time.sleep`` (gevent's, once patched), up to SQLITE_BUSY_TIMEOUT_MS in all. Only what
    can be tried again whole is: a statement outside a transaction, BEGIN IMMEDIATE included
    (a transaction takes the lock when it begins, so its later statements do not wait).
    """

    def _again(self, attempt: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        tries = 0
        while True:
            try:
                return attempt()
            except pw.OperationalError as error:
                if not _locked(error) or time.monotonic() >= deadline:
                    raise
            time.sleep(COOPERATIVE_PAUSES[min(tries, len(COOPERATIVE_PAUSES) - 1)])
            tries += 1

    def begin(self, lock_type: str | None = None) -> None:
        start = super().begin  # runs BEGIN on a cursor, not through execute_sql
        self._again(lambda: start(lock_type))

    def execute_sql(self, *args: Any, **kwargs: Any) -> Any:
        run = super().execute_sql
        if self.in_transaction():
            return run(*args, **kwargs)
        return self._again(lambda: run(*args, **kwargs))


POOL_IDLE = 16  # connections a panel worker keeps open between requests, at most
POOL_STALE = 300  # seconds: an older connection is closed rather than lent again


class _IdleBounded:
    """A pool of connections for the panel's gevent workers: a request borrows one and gives
    it back (``close``) instead of opening its own, which costs more than the dashboard's
    queries (SQLite sets its pragmas again each time; PostgreSQL shakes hands). A connection
    comes back rolled back if a transaction was left open; past POOL_IDLE idle ones the
    oldest are closed, so a burst does not keep its connections forever."""

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        super()._close(conn, close_conn)  # type: ignore[misc]
        with self._pool_lock:  # type: ignore[attr-defined]
            while len(self._connections) > POOL_IDLE:  # type: ignore[attr-defined]
                _, _, idle = heapq.heappop(self._connections)  # type: ignore[attr-defined]
                self._close_raw(idle)  # type: ignore[attr-defined]


class PooledCooperativeSqliteDatabase(
    _IdleBounded, PooledSqliteDatabase, CooperativeSqliteDatabase
):
    """SQLite for the panel's gevent workers: cooperative waits, pooled connections."""


class PooledCooperativePostgresqlDatabase(_IdleBounded, PooledPostgresqlDatabase):
    """PostgreSQL for the panel's gevent workers: pooled connections."""


def cooperative() -> bool:
    """True in a process whose threads are greenlets (the panel's gevent workers)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def build_database(url: str) -> pw.Database:
    """A peewee database for a sqlite:/// or postgresql:// URL (not connected yet)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path:
            raise DatabaseError(f"{url!r}: write SQLite URLs as sqlite:////absolute/path.db")
        if path != "/:memory:":
            _create_private_sqlite_file(Path(path))
        # BEGIN IMMEDIATE: a write transaction takes the lock when it starts, so two writers
        # wait on busy_timeout instead of failing with "database is locked" on upgrade.
        if cooperative():
            pragmas = {**SQLITE_PRAGMAS, "busy_timeout": COOPERATIVE_BUSY_TIMEOUT_MS}
            return PooledCooperativeSqliteDatabase(
                path,
                pragmas=pragmas,
                lock_type="IMMEDIATE",
                check_same_thread=False,
                max_connections=None,
                stale_timeout=POOL_STALE,
            )
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
        options = {
            "user": unquote(parts.username or "") or None,
            "password": unquote(parts.password or "") or None,
            "host": parts.hostname or None,
            "port": parts.port or 5432,
        }
        name = unquote(parts.path.lstrip("/")) or "helios"
        if cooperative():
            return PooledCooperativePostgresqlDatabase(
                name, max_connections=None, stale_timeout=POOL_STALE, **options
            )
        return pw.PostgresqlDatabase(name, **options)
    raise DatabaseError(
        f"unsupported database URL scheme {parts.scheme!r}: use sqlite:/// or postgresql://"
    )


def _create_private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (so its -wal and -shm are 0600 too);
    tighten the files of an older installation that were readable by others."""
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                file.chmod(PRIVATE_FILE_MODE)
        except FileNotFoundError:
            continue
        except PermissionError:
            logger.warning("%s is readable by others and not ours to chmod: make it 0600", file)


def open_database(url: str) -> pw.Database:
    """Point the shared proxy at the database behind ``url`` and return it."""
    db = build_database(url)
    database.initialize(db)
    return db


def _router() -> Router:
    from peewee_migrate import Router  # migrations only: the services need not load it

    return Router(database, migrate_dir=MIGRATIONS_DIR, logger=logger)


@contextlib.contextmanager
def _foreign_keys_deferred() -> Iterator[None]:
    """SQLite cannot alter a column in place: the migrator copies the table into a new one and
    drops the old, and with foreign keys enforced that drop deletes every row that references
    it through ON DELETE CASCADE (adding the build columns to ``app`` once emptied every app's
    releases, deployments, domains and variables). Migrations run with enforcement off, as
    SQLite's documentation prescribes for schema changes; then every reference is checked."""
    sqlite = isinstance(database.obj, pw.SqliteDatabase)
    if sqlite:
        database.execute_sql("PRAGMA foreign_keys = OFF")  # outside any transaction: it counts
    try:
        yield
        if sqlite:
            broken = database.execute_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise DatabaseError(
                    f"the migration left {len(broken)} broken references (table, row, "
                    f"referenced table): {broken[:5]}; restore the backup taken before it"
                )
    finally:
        if sqlite:
            database.execute_sql("PRAGMA foreign_keys = ON")


def migrate_up() -> list[str]:
    """Apply every pending migration; return the names applied."""
    with database.connection_context(), _foreign_keys_deferred():
        applied = _router().run()
        track_changes()
        return applied


# What the dashboard shows: a change to any of these tables moves the change count.
CHANGE_TRACKED_TABLES = (
    "app",
    "team",
    "membership",
    "release",
    "deployment",
    "app_health",
    "app_metric",
    "app_drift",
)
_TRIGGER = "count_change"  # the triggers' name (prefix), as migration 018 drops them
_COUNT_SQL = "UPDATE change_count SET n = n + 1 WHERE id = 1"


def track_changes() -> None:
    """Make sure each tracked table has its trigger moving the change count (idempotent).

    Run after every migration run: SQLite migrations that alter a column rebuild the table,
    and a rebuilt table has lost its triggers. On SQLite a trigger runs per row, on
    PostgreSQL once per statement; either way in the writer's transaction, so the count and
    the change it counts become visible together.
    """
    if "change_count" not in database.get_tables():
        return  # migration 018 not applied (a rollback below it)
    if isinstance(database.obj, pw.PostgresqlDatabase):
        _track_changes_postgresql()
        return
    for table in CHANGE_TRACKED_TABLES:
        for operation in ("INSERT", "UPDATE", "DELETE"):
            database.execute_sql(
                f'CREATE TRIGGER IF NOT EXISTS "{_TRIGGER}_{table}_{operation.lower()}" '
                f'AFTER {operation} ON "{table}" BEGIN {_COUNT_SQL}; END'
            )


def _track_changes_postgresql() -> None:
    with database.atomic():
        database.execute_sql(
            f"CREATE OR REPLACE FUNCTION {_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {_COUNT_SQL}; RETURN NULL; END $$"
        )
        present = {
            table
            for (table,) in database.execute_sql(
                "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE t.tgname = %s",
                (_TRIGGER,),
            )
        }
        for table in CHANGE_TRACKED_TABLES:
            if table not in present:
                database.execute_sql(
                    f'CREATE TRIGGER {_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON "{table}" '
                    f"FOR EACH STATEMENT EXECUTE PROCEDURE {_TRIGGER}()"
                )


def change_count() -> int | None:
    """How many times what the dashboard shows has changed (None before migration 018)."""
    row = database.execute_sql("SELECT n FROM change_count WHERE id = 1").fetchone()
    return None if row is None else int(row[0])


# Rows SQLite's ANALYZE reads per index: approximate statistics, in milliseconds however large
# the tables grow (a full ANALYZE of 100,000 deployments takes ~45 ms and locks writers).
ANALYSIS_LIMIT = 1000


def refresh_statistics() -> None:
    """Give SQLite's query planner statistics about the tables (``sqlite_stat1``). Without
    them it guesses, and on a busy installation picks the wrong index: the dashboard's newest
    succeeded deployment per app went by the status index (80 % of the rows) instead of the
    app's, 14 ms instead of 1 ms a page with 100,000 deployments. PostgreSQL's autovacuum keeps
    its own statistics: nothing to do there."""
    if not isinstance(database.obj, pw.SqliteDatabase):
        return
    with database.connection_context():
        database.execute_sql(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
        database.execute_sql("ANALYZE")


def migrate_down(steps: int = 1) -> list[str]:
    """Roll back the newest ``steps`` migrations; return the names rolled back."""
    undone: list[str] = []
    with database.connection_context(), _foreign_keys_deferred():
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
