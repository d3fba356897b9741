"""Personal API tokens: created (shown once), resolved from a bearer header, revoked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from panel.crypto import hash_token, new_token
from panel.db import database
from panel.models import ApiToken, TokenScope, User, utcnow

__all__ = ["TokenError", "create_token", "resolve_token", "revoke_token"]

MAX_TOKEN_DAYS = 366
TOKEN_NAME_MAX = 100


class TokenError(ValueError):
    """A token request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class NewToken:
    """A token as created: ``secret`` is shown to its owner once and never stored."""

    row: ApiToken
    secret: str


def create_token(user: User, name: str, scopes: list[str], days: int | None = 90) -> NewToken:
    """Create a token for ``user`` with ``scopes`` that expires after ``days`` (None: never)."""
    name = name.strip()
    if not name or len(name) > TOKEN_NAME_MAX or not name.isprintable():
        raise TokenError(f"give the token a name of 1 to {TOKEN_NAME_MAX} printable characters")
    allowed = {s.value for s in TokenScope}
    if not scopes or any(scope not in allowed for scope in scopes):
        raise TokenError(f"scopes must be one or more of: {', '.join(sorted(allowed))}")
    if days is not None and not 1 <= days <= MAX_TOKEN_DAYS:
        raise TokenError(f"expiry must be 1 to {MAX_TOKEN_DAYS} days, or none")
    secret = new_token()
    with database.atomic():
        row = ApiToken.create(
            user=user,
            name=name,
            token_hash=hash_token(secret),
            prefix=secret[:10],
            scopes=sorted(set(scopes)),
            expires_at=utcnow() + timedelta(days=days) if days else None,
        )
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


def revoke_token(user: User, token_id: int) -> ApiToken:
    """Revoke one of ``user``'s tokens; revoking twice is harmless."""
    row = ApiToken.get_or_none((ApiToken.id == token_id) & (ApiToken.user == user.id))
    if row is None:
        raise TokenError("no such token")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        row.save(only=[ApiToken.revoked_at])
    return row
