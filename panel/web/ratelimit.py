"""Request budgets kept in Redis: how many requests one API token (or one address) may make.

A fixed window per key (the ``limits`` library, the same one Flask-Limiter uses), so every panel
worker and replica shares one count. When Redis does not answer, requests are let through and
the outage is logged: the panel is not ready then anyway (``/readyz``), and a missing limit must
not turn into 500s.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

__all__ = ["Budget", "RateLimiter"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """The verdict for one request: allowed, or refused with the seconds until it may retry."""

    allowed: bool
    retry_after: int = 0


class RateLimiter:
    """Counts hits per key against one or more rates (e.g. '600 per minute')."""

    def __init__(self, rates: str, redis_url: str, namespace: str) -> None:
        if redis_url.startswith("unix://"):  # the limits library names UNIX sockets this way
            redis_url = "redis+" + redis_url
        self.items: list[RateLimitItem] = parse_many(rates)
        self.namespace = namespace
        self._limiter = FixedWindowRateLimiter(storage_from_string(redis_url))

    def hit(self, key: str) -> Budget:
        """Count one request for ``key``; refuse it when any rate is used up."""
        try:
            for item in self.items:
                if not self._limiter.hit(item, self.namespace, key):
                    reset = self._limiter.get_window_stats(item, self.namespace, key).reset_time
                    return Budget(False, max(1, math.ceil(reset - time.time())))
        except (StorageError, redis.RedisError) as exc:
            logger.warning("rate limit %s not checked (Redis unavailable): %s", self.namespace, exc)
        return Budget(True)
