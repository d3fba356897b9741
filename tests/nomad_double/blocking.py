"""Blocking queries of the Nomad double (https://developer.hashicorp.com/nomad/api-docs#blocking-queries).

"With ``index`` the HTTP request will hang until a change in the system occurs, or the maximum
timeout is reached"; ``wait`` is a Go duration ("10s", "5m", "500ms"). The docs say it is
limited to 10 minutes and defaults to 5; the source caps and defaults it at 300 s
(``MaxBlockingRPCQueryTime``/``DefaultBlockingRPCQueryTime``, ``QueryOptions.TimeToBlock``),
which the double follows, and adds up to wait/16 of random jitter (``JitterFraction``).
Without ``index`` (or with 0) a query never blocks. A wrong value is a 400 with
command/agent/http.go parseWait's text.

The wait is a condition variable on the cluster lock, notified by every commit: the query
re-reads its index after each write and returns once it exceeds ``index``.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable

from .state import ApiError
from .txn import Writes

MAX_WAIT = 300.0  # seconds, structs.MaxBlockingRPCQueryTime
DEFAULT_WAIT = 300.0  # seconds, structs.DefaultBlockingRPCQueryTime
JITTER_FRACTION = 16  # structs.JitterFraction: up to wait/16 more

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string (time.ParseDuration); ValueError when malformed."""
    sign, rest = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.removeprefix("+"))
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(text)
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _DURATION.match(rest, pos)
        if not match or match.group(1) in ("", "."):
            raise ValueError(text)
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def query_options(query: dict[str, list[str]]) -> tuple[int, float]:
    """(min index, seconds to block) from ``index`` and ``wait``; 0 seconds when not blocking."""
    wait = DEFAULT_WAIT
    if query.get("wait", [""])[0]:
        try:
            wait = parse_duration(query["wait"][0])
        except ValueError:
            raise ApiError(400, "Invalid wait time") from None
    raw = query.get("index", [""])[0]
    if raw and not raw.isdigit():
        raise ApiError(400, "Invalid index")
    index = int(raw or 0)
    if index == 0:
        return 0, 0.0
    if wait > MAX_WAIT:
        wait = MAX_WAIT
    elif wait <= 0:
        wait = DEFAULT_WAIT
    return index, wait + random.uniform(0, wait / JITTER_FRACTION)


def block(
    writes: Writes,
    index_of: Callable[[], int],
    min_index: int,
    wait: float,
    stopping: threading.Event,
) -> int:
    """Wait (holding writes.lock) until index_of() > min_index or wait elapses; return the index."""
    deadline = time.monotonic() + wait
    index = max(index_of(), 1)
    while min_index and index <= min_index and not stopping.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        writes.changed.wait(remaining)
        index = max(index_of(), 1)
    return index
