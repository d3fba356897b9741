"""The API's teams: anyone with an admin-scoped token creates one; its owners delete it once empty.

Thin over ``panel.actions.teams``, the functions the Teams page calls: the same checks, the
same events. The caller's teams are listed by ``GET /api/v1/me``.

The routes belong to the API blueprint (bearer tokens, scopes, JSON errors): ``panel.web.api``
imports this module, which registers them on its ``bp``.
"""

from __future__ import annotations

from flask import jsonify
from werkzeug.exceptions import NotFound

from panel.actions.limits import limits_of, set_team_limits, usage_of
from panel.actions.teams import create_team, delete_team
from panel.models import Role, Team, TokenScope
from panel.schema.accounts import DeleteTeamIn, MembershipOut, TeamIn
from panel.schema.limits import MEASURES, TeamLimitsIn, TeamLimitsOut
from panel.validation import ValidationError, validate_slug
from panel.web.access import team_or_404
from panel.web.api import _principal, _redis, _user, bp
from panel.web.api_io import fail, membership_json, read_body
from panel.web.openapi import operation

__all__ = ["create_team_view", "delete_team_view", "set_team_limits_view", "team_limits_view"]

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


# ---------------------------------------------------------------------------------------------
# Limits: everyone in the team reads them with its usage; site admins (operators) set them
# ---------------------------------------------------------------------------------------------


def _limited(slug: str) -> Team:
    """The team ``slug`` for a member of it or an operator; 404 for anyone else."""
    principal = _principal()
    try:
        validate_slug(slug, "team")
        if principal.user.is_operator:
            team = Team.get_or_none(Team.slug == slug)
            if team is not None:
                return team
            raise NotFound()
        return team_or_404(slug, principal, Role.VIEWER)
    except (ValidationError, NotFound):
        fail(404, f"you are not in a team named {slug[:63]!r}: `helios teams list` names "
                  "your teams")  # fmt: skip


def limits_json(team: Team) -> dict:
    """A team's usage against its limits (``TeamLimitsOut``)."""
    used, limits = usage_of(team).as_dict(), limits_of(team).as_dict()
    return {
        "team": team.slug,
        **{m: {"used": used[m], "limit": limits[m]} for m in MEASURES},
    }


@bp.get("/teams/<team>/limits")
@operation(TAG, TokenScope.READ, out=TeamLimitsOut, errors=(404,))
def team_limits_view(team: str):
    """A team's usage and limits: apps, instances, CPU and memory (null: no limit).

    Usage counts live apps; a stopped app runs no instance and uses no CPU or memory."""
    return jsonify(limits_json(_limited(team)))


@bp.put("/teams/<team>/limits")
@operation(TAG, TokenScope.ADMIN, body=TeamLimitsIn, out=TeamLimitsOut, errors=(403, 404))
def set_team_limits_view(team: str):
    """Set a team's limits (site admins only); a field left out stays, null removes one.

    A limit below the team's usage is accepted: what runs keeps running, and nothing may grow
    until usage is under it. 403 unless the token's owner is a site admin (operator)."""
    row = _limited(team)
    body = read_body(TeamLimitsIn)  # checked first: what is wrong in it is said to anyone
    if not _user().is_operator:
        fail(403, "only a site admin (operator) sets a team's limits: ask one to run "
                  f"`helios teams limits {row.slug}`")  # fmt: skip
    set_team_limits(actor=_user(), team=row, limits=body.given(), redis_conn=_redis())
    return jsonify(limits_json(row))
