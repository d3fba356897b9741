"""Personal API tokens: created (shown once), resolved from a bearer header, revoked.

A token made through the API by another token is that token's child: it never has a stronger
scope or a later expiry than its parent, and revoking a token revokes its children (and theirs),
so a leaked token cannot outlive or outgrow itself by minting new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import redis

from panel.actions.common import ActionError, FieldError
from panel.crypto import hash_token, new_token
from panel.db import database
from panel.events import emit
from panel.models import ApiToken, TokenScope, User, utcnow
from panel.schema.accounts import MAX_TOKEN_DAYS, TokenIn
from panel.schema.base import Problems, check

__all__ = [
    "MAX_TOKEN_DAYS",
    "SCOPE_RANK",
    "create_token",
    "resolve_token",
    "revoke_token",
    "token_allows",
]

# Each scope includes the weaker ones: deploy may read, admin may deploy and read.
SCOPE_RANK = {TokenScope.READ: 0, TokenScope.DEPLOY: 1, TokenScope.ADMIN: 2}


@dataclass(frozen=True)
class NewToken:
    """A token as created: ``secret`` is shown to its owner once and never stored."""

    row: ApiToken
    secret: str


def _rank(scopes: list[str]) -> int:
    return max(SCOPE_RANK[TokenScope(scope)] for scope in scopes)


def token_allows(token: ApiToken, needed: TokenScope) -> bool:
    """True when one of the token's scopes includes ``needed``."""
    return _rank(token.scopes) >= SCOPE_RANK[needed]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def _event_data(row: ApiToken) -> dict:
    data = {
        "token_id": row.id,
        "name": row.name,
        "scopes": list(row.scopes),
        "expires_at": _time(row.expires_at),
    }
    if row.parent_id is not None:
        data["parent_token_id"] = row.parent_id
    return data


def _within_parent(parent: ApiToken, expires_at: datetime | None) -> datetime | None:
    """Asking for as many days as the parent has left ends with the parent, not a bit after."""
    if (
        parent.expires_at is not None
        and expires_at is not None
        and parent.expires_at < expires_at <= parent.expires_at + timedelta(days=1)
    ):
        return parent.expires_at
    return expires_at


def _check_parent(parent: ApiToken, scopes: list[str], expires_at: datetime | None) -> None:
    """A minted token is never stronger nor longer-lived than the token minting it."""
    if _rank(scopes) > _rank(parent.scopes):
        raise ActionError(
            "forbidden",
            f"a token can only make tokens within its own scopes ({', '.join(parent.scopes)}): "
            "create stronger tokens in the panel",
            "scopes",
        )
    if parent.expires_at is not None and (expires_at is None or expires_at > parent.expires_at):
        raise ActionError(
            "forbidden",
            f"this token expires at {_time(parent.expires_at)}: a token it makes must expire "
            "no later, so give fewer days",
            "days",
        )


def create_token(
    user: User,
    name: str,
    scopes: list[str],
    days: int | None = 90,
    *,
    parent: ApiToken | None = None,
    redis_conn: redis.Redis | None = None,
) -> NewToken:
    """Create a token for ``user`` with ``scopes`` that expires after ``days`` (None: never).

    The three are checked by :class:`~panel.schema.accounts.TokenIn`, every one at fault
    reported at once. ``parent`` is the token asking, when a token mints one through the API.
    """
    try:
        given = check(TokenIn, {"name": name, "scopes": scopes, "days": days})
    except Problems as exc:
        raise ActionError.invalid([FieldError(p.field, p.message) for p in exc.problems]) from None
    name, scopes, days = given.name, given.scopes, given.days
    now = utcnow()
    expires_at = now + timedelta(days=days) if days else None
    if parent is not None:
        expires_at = _within_parent(parent, expires_at)
        _check_parent(parent, scopes, expires_at)
    secret = new_token()
    with database.atomic():
        row = ApiToken.create(
            user=user,
            name=name,
            token_hash=hash_token(secret),
            prefix=secret[:10],
            scopes=scopes,
            expires_at=expires_at,
            parent=parent,
            created_at=now,
        )
        emit("v1.token.created", _event_data(row), actor=user.email, user=user,
             redis_conn=redis_conn)  # fmt: skip
    return NewToken(row, secret)


def resolve_token(secret: str) -> ApiToken | None:
    """The live token behind a bearer secret (not revoked, not expired, owner active)."""
    row = (
        ApiToken.select(ApiToken, User)
        .join(User)
        .where(ApiToken.token_hash == hash_token(secret))
        .first()
    )
    now = utcnow()
    if row is None or row.revoked_at is not None or not row.user.is_active:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute()
    return row


def _descendants(token_id: int) -> list[int]:
    """Ids of every token minted by ``token_id``, directly or through its children."""
    found: list[int] = []
    frontier = [token_id]
    while frontier:
        children = [
            row.id for row in ApiToken.select(ApiToken.id).where(ApiToken.parent.in_(frontier))
        ]
        found += children
        frontier = children
    return found


def revoke_token(user: User, token_id: int, *, redis_conn: redis.Redis | None = None) -> ApiToken:
    """Revoke one of ``user``'s tokens and every token it minted; revoking twice is harmless."""
    row = ApiToken.get_or_none((ApiToken.id == token_id) & (ApiToken.user == user.id))
    if row is None:
        raise ActionError("not_found", "no such token", "token_id")
    if row.revoked_at is not None:
        return row
    now = utcnow()
    with database.atomic():
        row.revoked_at = now
        row.save(only=[ApiToken.revoked_at])
        children = _descendants(row.id)
        live = [
            child.id
            for child in ApiToken.select(ApiToken.id).where(
                ApiToken.id.in_(children) & ApiToken.revoked_at.is_null()
            )
        ]
        if live:
            ApiToken.update(revoked_at=now).where(ApiToken.id.in_(live)).execute()
        data = _event_data(row)
        if live:
            data["revoked_with_parent"] = live
        emit("v1.token.revoked", data, actor=user.email, user=user, redis_conn=redis_conn)
    return row
