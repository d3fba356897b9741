"""Who is asking and what they may do: sessions, bearer tokens, roles and scopes.

A request is made by a *principal*: a signed-in person (a browser session, on the pages) or a
personal API token (a bearer header, on the API only). The two never mix: the pages ignore an
``Authorization`` header, and the API ignores session cookies, so a leaked token cannot lend
its owner's identity to somebody else's browser session. What a principal may do is the
smaller of the person's role in the object's team and, for a token, the token's scope: each
role needs a matching scope (viewer → read, deployer → deploy, admin and owner → admin), and
:func:`app_or_404` / :func:`team_or_404` check both, so no route can check one and forget the
other. Another team's objects answer 404, never 403, so their existence does not leak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import abort, g
from flask_login import current_user

from panel.actions.common import ActionError
from panel.actions.tokens import token_allows
from panel.models import ApiToken, App, Membership, Role, Team, TokenScope, User

__all__ = [
    "SCOPE_FOR_ROLE",
    "Principal",
    "abort_for",
    "app_or_404",
    "current_principal",
    "require_scope",
    "team_or_404",
]

# The HTTP status of each ActionError code (anything else: 400).
ACTION_STATUS = {
    "invalid": 422,
    "not_found": 404,
    "forbidden": 403,
    "conflict": 409,
    "unpinned": 409,  # a host's SSH host keys must be pinned first
    "unreachable": 502,  # a host the request needs did not answer
}
# The scope a token needs to act with a role: a token is never stronger than its scope.
SCOPE_FOR_ROLE = {
    Role.VIEWER: TokenScope.READ,
    Role.DEPLOYER: TokenScope.DEPLOY,
    Role.ADMIN: TokenScope.ADMIN,
    Role.OWNER: TokenScope.ADMIN,
}


@dataclass(frozen=True)
class Principal:
    """The person behind a request, and the token it came with (None for a session)."""

    user: User
    token: ApiToken | None = None

    def has_scope(self, needed: TokenScope) -> bool:
        """A session may do all its roles allow; a token only what its scopes allow."""
        return self.token is None or token_allows(self.token, needed)


def current_principal() -> Principal | None:
    """The principal of this request, or None when anonymous.

    The API sets ``g.principal`` from its bearer token before any view runs; everywhere else
    only the session counts and an ``Authorization`` header is ignored.
    """
    if "principal" in g:
        return g.principal
    principal = None
    if current_user.is_authenticated:
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


def check_access(principal: Principal, team_id: int, needed: Role) -> None:
    """404 outside the principal's teams; 403 when its role or its token's scope is too weak."""
    role = role_in(principal.user, team_id)
    if role is None:
        abort(404)
    if role.rank < needed.rank:
        abort(403, f"This needs the {needed.value} role in the team.")
    scope = SCOPE_FOR_ROLE[needed]
    if not principal.has_scope(scope):
        abort(403, f"This needs a token with the {scope.value!r} scope.")


def app_or_404(slug: str, principal: Principal, needed: Role = Role.VIEWER) -> App:
    """The app ``slug`` if the principal may act on it with ``needed``; else 404/403."""
    app = App.live(App, Team).join(Team).where(App.slug == slug).first()
    if app is None:
        abort(404)
    check_access(principal, app.team_id, needed)
    return app


def team_or_404(slug: str, principal: Principal, needed: Role = Role.VIEWER) -> Team:
    """The team ``slug`` if the principal may act in it with ``needed``; else 404/403."""
    team = Team.get_or_none(Team.slug == slug)
    if team is None:
        abort(404)
    check_access(principal, team.id, needed)
    return team


def abort_for(exc: ActionError) -> None:
    """Turn an ActionError into the matching HTTP error."""
    abort(ACTION_STATUS.get(exc.code, 400), str(exc))
