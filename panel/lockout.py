"""Sign-in lock-out: slow down guessing without letting anyone lock an owner out.

Three counts live in Redis, keyed by the *submitted* email (whether or not an account uses it,
so a refusal never tells which emails have accounts):

- **account and address** (or account and known browser): the first ``free_failures`` failures cost
  nothing; each further one locks that pair for 2, 4, 8 … seconds, up to ``backoff_max``. The
  count is forgotten a day after the last failure, or at once by a successful sign-in. Only the
  guessing address waits: the owner elsewhere signs in as usual.
- **address** (spraying many accounts from one place): ``address_failures`` failures per
  ``window`` seconds, then that address waits for the window to end. IPv6 addresses count per
  /64, the block one subscriber usually holds.
- **account** (a guess spread over many addresses): ``account_failures`` failures per ``window``
  from browsers that never signed in to the account, then such browsers wait for the window.

A browser that signed in to the account before carries a signed "known browser" cookie (see
``panel.web.auth``): it is exempt from the address and account counts, so neither a spray from
a shared address nor a distributed guess locks the owner out of a browser they used before; its
own failures still back off, per browser.

When Redis does not answer, attempts are let through and the outage is logged: the panel is not
ready then anyway (``/readyz``), and sign-in must not turn into 500s.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass

import redis

from panel.config import Settings

__all__ = [
    "Attempt",
    "Policy",
    "Refusal",
    "address_key",
    "backoff_message",
    "backoff_seconds",
    "check_attempt",
    "forget_failures",
    "record_failure",
]

logger = logging.getLogger(__name__)

PREFIX = "helios:signin"
PAIR_MEMORY = 24 * 3600  # seconds a pair's failure count outlives its last failure
MAX_DOUBLINGS = 30  # 2**30 s is past any configured cap; keeps the power small


@dataclass(frozen=True)
class Policy:
    """The numbers of the lock-out (from the HELIOS_LOGIN_* settings)."""

    free_failures: int = 5
    backoff_max: int = 900  # seconds
    address_failures: int = 50
    account_failures: int = 100
    window: int = 900  # seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy an installation configured."""
        return cls(
            free_failures=settings.login_free_failures,
            backoff_max=settings.login_backoff_max,
            address_failures=settings.login_address_failures,
            account_failures=settings.login_account_failures,
            window=settings.login_window,
        )


@dataclass(frozen=True)
class Attempt:
    """One sign-in attempt: the submitted email, the client address, and the known browser.

    ``device`` is set when the browser proved it signed in to this account before; failures are
    then counted per browser instead of per address, and the wider caps do not apply.
    """

    email: str
    address: str
    device: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why an attempt is refused before the password is looked at, and for how long."""

    message: str
    retry_after: int  # seconds


def backoff_seconds(policy: Policy, failures: int) -> int:
    """How long a pair waits after its ``failures``-th failure (0: no wait yet)."""
    extra = failures - policy.free_failures
    if extra <= 0:
        return 0
    return min(policy.backoff_max, 2 ** min(extra, MAX_DOUBLINGS))


def backoff_message(attempt: Attempt, seconds: int) -> str:
    """What the sign-in page says while an account and address (or browser) pair waits."""
    source = "this browser" if attempt.device else "this address"
    return f"Too many failed attempts from {source} for this account: try again in {seconds} s."


def _digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def address_key(address: str) -> str:
    """The address as counted: IPv4 as is, IPv6 by its /64 block."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _pair(attempt: Attempt) -> str:
    who = f"d:{attempt.device}" if attempt.device else f"a:{address_key(attempt.address)}"
    return f"{PREFIX}:pair:{_digest(attempt.email)}:{who}"


def _window_keys(attempt: Attempt) -> tuple[str, str]:
    return (
        f"{PREFIX}:address:{address_key(attempt.address)}",
        f"{PREFIX}:account:{_digest(attempt.email)}",
    )


def check_attempt(conn: redis.Redis, policy: Policy, attempt: Attempt) -> Refusal | None:
    """A Refusal when this attempt must wait; None when the password may be checked."""
    try:
        return _check(conn, policy, attempt)
    except redis.RedisError as exc:
        logger.warning("sign-in lock-out not checked (Redis unavailable): %s", exc)
        return None


def _check(conn: redis.Redis, policy: Policy, attempt: Attempt) -> Refusal | None:
    wait = conn.ttl(_pair(attempt) + ":lock")
    if wait > 0:
        return Refusal(backoff_message(attempt, wait), wait)
    if attempt.device:
        return None
    address, account = _window_keys(attempt)
    pipe = conn.pipeline(transaction=False)
    pipe.get(address)
    pipe.ttl(address)
    pipe.get(account)
    pipe.ttl(account)
    address_count, address_ttl, account_count, account_ttl = pipe.execute()
    if int(address_count or 0) >= policy.address_failures and address_ttl > 0:
        return Refusal(
            f"Too many failed sign-ins from this address: try again in {address_ttl} s.",
            address_ttl,
        )
    if int(account_count or 0) >= policy.account_failures and account_ttl > 0:
        return Refusal(
            "Too many failed sign-ins for this account from browsers it was never used in: "
            f"try again in {account_ttl} s, or from a browser you signed in with before.",
            account_ttl,
        )
    return None


def record_failure(conn: redis.Redis, policy: Policy, attempt: Attempt) -> int:
    """Count a failed attempt; return the seconds of back-off it started (0: none)."""
    try:
        return _record(conn, policy, attempt)
    except redis.RedisError as exc:
        logger.warning("sign-in failure not counted (Redis unavailable): %s", exc)
        return 0


def _record(conn: redis.Redis, policy: Policy, attempt: Attempt) -> int:
    pair = _pair(attempt)
    pipe = conn.pipeline(transaction=True)
    pipe.incr(pair)
    pipe.expire(pair, PAIR_MEMORY)
    if not attempt.device:
        for key in _window_keys(attempt):
            # SET NX EX opens a window once; INCR keeps its expiry (works on Redis 6.2 too).
            pipe.set(key, 0, ex=policy.window, nx=True)
            pipe.incr(key)
    failures = pipe.execute()[0]
    wait = backoff_seconds(policy, failures)
    if wait:
        conn.set(pair + ":lock", 1, ex=wait)
    return wait


def forget_failures(conn: redis.Redis, attempt: Attempt) -> None:
    """A successful sign-in clears its pair's failures (not the address or account windows)."""
    try:
        conn.delete(_pair(attempt), _pair(attempt) + ":lock")
    except redis.RedisError as exc:
        logger.warning("sign-in failures not cleared (Redis unavailable): %s", exc)
