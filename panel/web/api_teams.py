"""The API's teams: anyone with an admin-scoped token creates one; its owners delete it once empty.

Thin over ``panel.actions.teams``, the functions the Teams page calls: the same checks, the
same events. The caller's teams are listed by ``GET /api/v1/me``.

The routes belong to the API blueprint (bearer tokens, scopes, JSON errors): ``panel.web.api``
imports this module, which registers them on its ``bp``.
"""

from __future__ import annotations

from flask import jsonify
from werkzeug.exceptions import NotFound

from panel.actions.teams import create_team, delete_team
from panel.models import Role, Team, TokenScope
from panel.schema.accounts import DeleteTeamIn, MembershipOut, TeamIn
from panel.validation import ValidationError, validate_slug
from panel.web.access import team_or_404
from panel.web.api import _principal, _redis, _user, bp
from panel.web.api_io import fail, membership_json, read_body
from panel.web.openapi import operation

__all__ = ["create_team_view", "delete_team_view"]

TAG = "teams"


def _owned(slug: str) -> Team:
    """The team ``slug`` if the caller owns it; 404 outside the caller's teams, 403 with a
    weaker role."""
    try:
        validate_slug(slug, "team")
        return team_or_404(slug, _principal(), Role.OWNER)
    except (ValidationError, NotFound):
        fail(404, f"you are not in a team named {slug[:63]!r}: `helios teams list` names "
                  "your teams")  # fmt: skip


@bp.post("/teams")
@operation(TAG, TokenScope.ADMIN, body=TeamIn, out=MembershipOut, ok=201, errors=(409,))
def create_team_view():
    """Create a team; the token's owner is its first owner.

    409 when a team already has that slug (slugs are unique across the panel)."""
    body = read_body(TeamIn)
    team = create_team(actor=_user(), slug=body.slug, name=body.name, redis_conn=_redis())
    return jsonify(membership_json(team, Role.OWNER)), 201


@bp.delete("/teams/<team>")
@operation(TAG, TokenScope.ADMIN, body=DeleteTeamIn, ok=204, errors=(404, 409))
def delete_team_view(team: str):
    """Delete a team that has no apps (its owners); `confirm` must be its slug.

    Its memberships and notifiers go with it; its audit events stay. 409 while it has apps
    (delete them first) or a deleted app not yet purged from Nomad (try again in a few
    minutes); 422 when `confirm` is not its slug."""
    row = _owned(team)
    body = read_body(DeleteTeamIn)
    delete_team(actor=_user(), team=row, confirm=body.confirm, redis_conn=_redis())
    return "", 204
