"""Teams themselves: anyone signed in creates one (and owns it); its owners delete it once empty.

The panel's Teams page, the API (``POST /api/v1/teams``, ``DELETE /api/v1/teams/<team>``) and
`helios teams` call these, so the rules live here:

- A team's slug follows the same allow-list as an app's (``validate_slug``); a taken slug is
  refused with a clear ``conflict``.
- Deleting needs the owner role and the slug typed again, and is refused while the team has a
  live app (delete its apps first) or a deleted app whose Nomad job is not purged yet (the
  purge job still needs the row; it finishes within minutes while Nomad is reachable).
  Tombstones already purged go with the team, with the deployments and logs kept under them.
- The team's memberships and notifiers (and their deliveries) go with it (the foreign keys
  cascade); API tokens belong to people, not teams, and stay. Its audit events stay, belonging
  to no team from then on; ``v1.team.deleted`` is recorded for the person who deleted it.
- As when a member is removed, someone else left without any team is signed out everywhere.
"""

from __future__ import annotations

import peewee as pw
import redis

from panel.actions.common import ActionError, FieldError, actor_name, authorize
from panel.actions.sessions import revoke_all_sessions
from panel.db import database
from panel.events import emit
from panel.models import App, Membership, Role, Team, User, utcnow
from panel.namespaces import valid_namespace
from panel.schema.accounts import validate_team_name
from panel.validation import ValidationError, validate_slug

__all__ = ["create_team", "delete_team"]


def create_team(
    *, actor: User | None, slug: str, name: str = "", redis_conn: redis.Redis | None = None
) -> Team:
    """Create the team ``slug``; the person creating it is its first owner."""
    problems = []
    try:
        slug = validate_slug(slug, "slug")
    except ValidationError as exc:
        problems.append(FieldError("slug", exc.message))
    try:
        name = validate_team_name(name, "name")
    except ValidationError as exc:
        problems.append(FieldError("name", exc.message))
    if problems:
        raise ActionError.invalid(problems)
    name = name or slug.replace("-", " ").title()
    with database.atomic():
        if Team.select().where(Team.slug == slug).exists():
            raise ActionError(
                "conflict", f"a team named {slug!r} exists already: pick another slug", "slug"
            )
        try:
            # Its apps run in a Nomad namespace of its own (slugs fit Nomad's name rule).
            team = Team.create(
                slug=slug, name=name, created_at=utcnow(), nomad_namespace=valid_namespace(slug)
            )
        except pw.IntegrityError:  # created by a concurrent request since the check above
            raise ActionError(
                "conflict", f"a team named {slug!r} exists already: pick another slug", "slug"
            ) from None
        if actor is not None:
            Membership.create(user=actor, team=team, role=Role.OWNER.value)
        emit("v1.team.created", {"team": slug, "name": name}, actor=actor_name(actor),
             team=team, redis_conn=redis_conn)  # fmt: skip
    return team


def _blocking_apps(team: Team) -> str | None:
    """Why the team cannot go yet because of its apps, or None."""
    live = [a.slug for a in App.live(App.slug).where(App.team == team.id).order_by(App.slug)]
    if live:
        shown = ", ".join(live[:5]) + (f" and {len(live) - 5} more" if len(live) > 5 else "")
        return f"{team.slug} still has apps ({shown}): delete them first"
    unpurged = App.select().where(
        (App.team == team.id) & App.deleted_at.is_null(False) & App.purged_at.is_null()
    )
    if unpurged.exists():
        return (
            f"a deleted app of {team.slug} is still being purged from Nomad: try again in a "
            "few minutes (the purge waits for Nomad to be reachable)"
        )
    return None


def delete_team(
    *, actor: User | None, team: Team, confirm: str, redis_conn: redis.Redis | None = None
) -> Team:
    """Delete an empty team (owners only); ``confirm`` must be its slug, typed again."""
    authorize(actor, team, Role.OWNER)
    typed = (confirm or "").strip()
    if typed != team.slug:
        raise ActionError(
            "invalid",
            f"type the team's slug, {team.slug}, to confirm deleting it"
            + (f" (got {typed[:63]!r})" if typed else ""),
            "confirm",
        )
    with database.atomic():
        reason = _blocking_apps(team)
        if reason:
            raise ActionError("conflict", reason)
        members = [m.user_id for m in Membership.select().where(Membership.team == team.id)]
        # Purged tombstones go, and with them (cascading) their kept deployments and logs.
        App.delete().where(App.team == team.id).execute()
        Team.delete().where(Team.id == team.id).execute()
        emit("v1.team.deleted", {"team": team.slug, "name": team.name, "members": len(members)},
             actor=actor_name(actor), user=actor, redis_conn=redis_conn)  # fmt: skip
        for user_id in members:
            alone = not Membership.select().where(Membership.user == user_id).exists()
            if alone and (actor is None or user_id != actor.id):
                revoke_all_sessions(
                    user_id, reason="no_team_left", actor=actor_name(actor), redis_conn=redis_conn
                )
    return team
