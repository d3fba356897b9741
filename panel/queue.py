"""Redis and the RQ queues: jobs carry ids only, and the worker re-reads the rows."""

from __future__ import annotations

import redis
from rq import Queue

from panel.config import Settings

__all__ = ["app_lock_name", "connect_redis", "get_queue"]

REDIS_TIMEOUT = 5  # seconds for each command
# Seconds to connect: Redis runs beside Helios or on its network, so a connection not made
# within a second is a Redis that is down; a request needing it then fails fast (503).
REDIS_CONNECT_TIMEOUT = 1


def connect_redis(settings: Settings) -> redis.Redis:
    """A Redis client for the configured server (not connected until first used)."""
    return redis.Redis.from_url(
        settings.effective_redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
        health_check_interval=30,
    )


def app_lock_name(app_id: int) -> str:
    """The Redis lock a deploy job holds on its app while it submits to Nomad; a cancel takes
    the same lock, so it never ends a deployment a worker is registering at that moment."""
    return f"helios:deploy:app:{app_id}"


def get_queue(connection: redis.Redis, name: str = "default") -> Queue:
    """The RQ queue ``name`` on ``connection``."""
    return Queue(name, connection=connection)
