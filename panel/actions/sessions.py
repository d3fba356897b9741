"""Server-side sessions: a browser is signed in only while its ``UserSession`` row is live.

Signing in creates a row and gives the browser a random session id (kept in the signed Flask
cookie); the row keeps only its SHA-256. Every request looks the row up, so revoking it — sign
out, "sign out everywhere", a password change, losing one's last team — ends that browser's
session at once, even for a copy of the cookie. ``last_seen_at`` is written at most once a
minute, not on every request; a session unused for ``SESSION_IDLE_TIMEOUT`` is over.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import redis

from panel.crypto import hash_token
from panel.db import database
from panel.events import SCHEMAS, emit
from panel.models import User, UserSession, utcnow

__all__ = [
    "SESSION_IDLE_TIMEOUT",
    "SESSION_ID_KEY",
    "create_session",
    "find_session",
    "live_sessions",
    "revoke_all_sessions",
    "revoke_session",
    "start_session",
    "touch_session",
    "user_for_session",
]

SESSION_ID_KEY = "helios_session"  # where the Flask session keeps the random session id
SESSION_TOUCH_INTERVAL = timedelta(minutes=1)  # last_seen_at is at most this stale
SESSION_IDLE_TIMEOUT = timedelta(days=14)  # a session unused this long is over
# Why sessions end, as the event v1.session.revoked records it.
REVOKE_REASONS = tuple(SCHEMAS["v1.session.revoked"]["properties"]["reason"]["enum"])


def create_session(user: User, *, address: str = "", user_agent: str = "") -> str:
    """Record a new session for ``user``; return its random id (for the cookie, never stored)."""
    session_id = secrets.token_urlsafe(32)
    UserSession.create(
        user=user,
        token_hash=hash_token(session_id),
        address=address[:64],
        user_agent=user_agent[:200],
    )
    return session_id


def start_session(
    user: User,
    *,
    method: str,
    address: str = "",
    user_agent: str = "",
    redis_conn: redis.Redis | None = None,
) -> str:
    """Sign ``user`` in: a new session and its ``v1.signin.succeeded`` event, in one change.

    ``method`` is how they proved who they are (``password`` or ``github``); returns the
    session's random id for the cookie.
    """
    with database.atomic():
        session_id = create_session(user, address=address, user_agent=user_agent)
        emit(
            "v1.signin.succeeded",
            {"user_id": user.id, "email": user.email, "method": method, "address": address},
            actor=user.email, user=user, redis_conn=redis_conn,
        )  # fmt: skip
    return session_id


# The one lookup every signed-in page makes, written out: peewee would build the same SQL from
# its expression tree on each request, which cost more than running it. ``{p}`` is the
# driver's parameter marker; the values are parameters, never part of the text.
_SESSION_SQL = (
    'SELECT * FROM "user_session" WHERE "token_hash" = {p} AND "revoked_at" IS NULL'
    ' AND "last_seen_at" > {p}'
)
_USER_SQL = 'SELECT * FROM "user" WHERE "id" = {p} AND "is_active" = {p}'


def find_session(session_id: str | None) -> UserSession | None:
    """The live session with this id (not revoked, not idle, its person active), else None."""
    if not session_id or not isinstance(session_id, str) or len(session_id) > 100:
        return None
    marker = database.param
    idle_since = UserSession.last_seen_at.db_value(utcnow() - SESSION_IDLE_TIMEOUT)
    found = UserSession.raw(_SESSION_SQL.format(p=marker), hash_token(session_id), idle_since)
    row = next(iter(found), None)
    if row is None:
        return None
    person = next(iter(User.raw(_USER_SQL.format(p=marker), row.user_id, True)), None)
    if person is None:
        return None
    row.user = person
    return row


# Per session (its token's hash), when this process last moved its last_seen_at: the requests
# a page's burst (or a busy script) has in flight together all read the older time, and each
# would otherwise queue for SQLite's write lock to write the same minute.
_touched: dict[str, datetime] = {}
_TOUCHED_KEPT = 10_000


def touch_session(row: UserSession) -> None:
    """Note that the session was used, at most once per SESSION_TOUCH_INTERVAL."""
    now = utcnow()
    seen = max(row.last_seen_at, _touched.get(row.token_hash, row.last_seen_at))
    if now - seen < SESSION_TOUCH_INTERVAL:
        return
    if len(_touched) >= _TOUCHED_KEPT:
        _touched.clear()
    _touched[row.token_hash] = now  # first: requests arriving while this one writes leave it be
    row.last_seen_at = now
    UserSession.update(last_seen_at=now).where(UserSession.id == row.id).execute()


def user_for_session(user_id: str, session_id: str | None) -> tuple[User, UserSession] | None:
    """The person and live session behind a browser's cookie, touched; None when it is over."""
    row = find_session(session_id)
    if row is None or str(row.user_id) != str(user_id):
        return None
    touch_session(row)
    return row.user, row


def live_sessions(user: User) -> list[UserSession]:
    """The person's live sessions, most recently used first."""
    return list(
        UserSession.select()
        .where(
            (UserSession.user == user.id)
            & UserSession.revoked_at.is_null()
            & (UserSession.last_seen_at > utcnow() - SESSION_IDLE_TIMEOUT)
        )
        .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
    )


def revoke_session(row: UserSession) -> bool:
    """End one session; False when it had ended already."""
    updated = (
        UserSession.update(revoked_at=utcnow())
        .where((UserSession.id == row.id) & UserSession.revoked_at.is_null())
        .execute()
    )
    return bool(updated)


def revoke_all_sessions(
    user: User | int,
    *,
    reason: str = "revoked",
    actor: str = "system",
    keep: UserSession | None = None,
    redis_conn: redis.Redis | None = None,
) -> int:
    """End every live session of a person (but ``keep``); emit ``v1.session.revoked``.

    Called on "sign out everywhere", a password change or reset, and when a person loses
    their last team. Returns how many sessions ended; no event when none did.
    """
    if reason not in REVOKE_REASONS:
        raise ValueError(f"unknown reason {reason!r}: use one of {', '.join(REVOKE_REASONS)}")
    user = user if isinstance(user, User) else User.get_by_id(user)
    query = UserSession.update(revoked_at=utcnow()).where(
        (UserSession.user == user.id) & UserSession.revoked_at.is_null()
    )
    if keep is not None:
        query = query.where(UserSession.id != keep.id)
    with database.atomic():
        count = query.execute()
        if count:
            emit(
                "v1.session.revoked",
                {"user_id": user.id, "email": user.email, "count": count, "reason": reason},
                actor=actor, user=user, redis_conn=redis_conn,
            )  # fmt: skip
    return count
