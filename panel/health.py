"""Readiness: can this process reach the database and Redis right now?"""

from __future__ import annotations

import logging

import peewee as pw
import redis

__all__ = ["check_readiness"]

logger = logging.getLogger(__name__)


def check_readiness(database: pw.Database, redis_conn: redis.Redis) -> dict[str, str]:
    """Name → reason for every dependency that does not answer; empty when all do."""
    problems: dict[str, str] = {}
    try:
        with database.connection_context():
            database.execute_sql("SELECT 1")
    except pw.PeeweeException as exc:
        problems["database"] = f"database not reachable: {_reason(exc)}"
    try:
        redis_conn.ping()
    except redis.RedisError as exc:
        problems["redis"] = f"Redis not reachable: {_reason(exc)}"
    for name, reason in problems.items():
        logger.warning("not ready (%s): %s", name, reason)
    return problems


def _reason(exc: Exception) -> str:
    # First line only: driver messages can carry hints but never need a traceback.
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
