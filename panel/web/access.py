"""Who is asking and what they may do: sessions, bearer tokens, roles and scopes.

A request is made by a *principal*: a signed-in person (browser session) or a personal API
token (bearer). What it may do is the smaller of the person's role in the object's team and,
for a token, the token's scopes. Another team's objects answer 404, never 403, so their
existence does not leak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import abort, g, request
from flask_login import current_user

from panel.actions import ActionError
from panel.models import ApiToken, App, Membership, Role, Team, TokenScope, User
from panel.tokens import resolve_token

__all__ = [
    "SCOPE_RANK",
    "Principal",
    "abort_for",
    "app_or_404",
    "current_principal",
    "require_scope",
    "team_or_404",
]

SCOPE_RANK = {TokenScope.READ: 0, TokenScope.DEPLOY: 1, TokenScope.ADMIN: 2}
ACTION_STATUS = {"invalid": 422, "not_found": 404, "forbidden": 403, "conflict": 409}


@dataclass(frozen=True)
class Principal:
    """The person behind a request, and the token it came with (None for a session)."""

    user: User
    token: ApiToken | None = None

    def has_scope(self, needed: TokenScope) -> bool:
        """A session may do all its roles allow; a token only what its scopes allow."""
        if self.token is None:
            return True
        granted = max(SCOPE_RANK[TokenScope(s)] for s in self.token.scopes)
        return granted >= SCOPE_RANK[needed]


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def current_principal() -> Principal | None:
    """The principal of this request (cached on ``g``), or None when anonymous."""
    if "principal" in g:
        return g.principal
    principal = None
    secret = _bearer()
    if secret is not None:
        token = resolve_token(secret)
        principal = Principal(token.user, token) if token is not None else None
    elif current_user.is_authenticated:
        principal = Principal(current_user._get_current_object())
    g.principal = principal
    return principal


def require_scope(needed: TokenScope) -> Callable:
    """Decorator: 401 without a principal, 403 when a token lacks ``needed``."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal is None:
                abort(401, "Sign in, or send a personal API token as 'Authorization: Bearer …'.")
            if not principal.has_scope(needed):
                abort(403, f"This token lacks the {needed.value!r} scope.")
            return view(*args, **kwargs)

        return wrapper

    return decorate


def role_in(user: User, team_id: int) -> Role | None:
    """The user's role in a team, or None when not a member."""
    row = Membership.get_or_none((Membership.user == user.id) & (Membership.team == team_id))
    return Role(row.role) if row is not None else None


def _check_role(user: User, team_id: int, needed: Role) -> None:
    role = role_in(user, team_id)
    if role is None:
        abort(404)
    if role.rank < needed.rank:
        abort(403, f"This needs the {needed.value} role in the app's team.")


def app_or_404(slug: str, principal: Principal, needed: Role = Role.VIEWER) -> App:
    """The app ``slug`` if the principal's team may see it with ``needed``; else 404/403."""
    app = App.select(App, Team).join(Team).where(App.slug == slug).first()
    if app is None:
        abort(404)
    _check_role(principal.user, app.team_id, needed)
    return app


def team_or_404(slug: str, principal: Principal, needed: Role = Role.VIEWER) -> Team:
    """The team ``slug`` if the principal belongs to it with ``needed``; else 404/403."""
    team = Team.get_or_none(Team.slug == slug)
    if team is None:
        abort(404)
    _check_role(principal.user, team.id, needed)
    return team


def abort_for(exc: ActionError) -> None:
    """Turn an ActionError into the matching HTTP error."""
    abort(ACTION_STATUS.get(exc.code, 400), str(exc))
