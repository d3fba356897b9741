"""Team membership: owners add people, change their roles and remove them; a team keeps an owner.

Like ``panel.actions.apps``, each function checks permission, validates, writes and emits the event
(``v1.member.*``), so the panel's pages and any other caller share one set of rules.
"""

from __future__ import annotations

from typing import Any

import redis

from panel.actions.common import ActionError, FieldError, actor_name, authorize
from panel.actions.sessions import revoke_all_sessions
from panel.db import database
from panel.events import emit
from panel.models import Membership, Role, Team, User
from panel.schema.accounts import MemberIn
from panel.schema.base import Problems, check, check_field

__all__ = ["add_member", "change_role", "list_members", "remove_member"]


def _invalid(exc: Problems) -> ActionError:
    """Problems found by the schema, as the ``invalid`` ActionError naming each field."""
    return ActionError.invalid([FieldError(p.field, p.message) for p in exc.problems])


def _member(values: dict[str, Any]) -> MemberIn:
    """``values`` checked by :class:`MemberIn`, every field at fault reported at once."""
    try:
        return check(MemberIn, values)
    except Problems as exc:
        raise _invalid(exc) from None


def _role(value: str) -> Role:
    """A role, by MemberIn's rule for it."""
    try:
        return check_field(MemberIn, "role", value)
    except Problems as exc:
        raise _invalid(exc) from None


def _membership(team: Team, user_id: int) -> Membership:
    row = (
        Membership.select(Membership, User)
        .join(User)
        .where((Membership.team == team.id) & (Membership.user == user_id))
        .first()
    )
    if row is None:
        raise ActionError("not_found", f"that person is not a member of {team.slug}")
    return row


def _other_owners(team: Team, user_id: int) -> int:
    return (
        Membership.select()
        .where(
            (Membership.team == team.id)
            & (Membership.role == Role.OWNER.value)
            & (Membership.user != user_id)
        )
        .count()
    )


def _emit(subject: str, row: Membership, team: Team, actor: User | None, conn) -> None:
    emit(
        subject,
        {"team": team.slug, "user_id": row.user_id, "email": row.user.email, "role": row.role},
        actor=actor_name(actor), team=team, redis_conn=conn,
    )  # fmt: skip


def list_members(team: Team) -> list[Membership]:
    """The team's memberships with their users, strongest role first, then by email."""
    rows = list(Membership.select(Membership, User).join(User).where(Membership.team == team.id))
    return sorted(rows, key=lambda m: (-Role(m.role).rank, m.user.email))


def add_member(
    *,
    actor: User | None,
    team: Team,
    email: str,
    role: str,
    redis_conn: redis.Redis | None = None,
) -> Membership:
    """Make the person with an existing account ``email`` a member of ``team`` with ``role``.

    Both are checked by :class:`~panel.schema.accounts.MemberIn`, every one at fault at once.
    """
    authorize(actor, team, Role.OWNER)
    given = _member({"email": email, "role": role})
    chosen = given.role
    user = User.get_or_none(User.email == given.email)
    if user is None or not user.is_active:
        raise ActionError(
            "not_found",
            f"no account uses {given.email!r}: they sign in once first (or an operator "
            "runs `helios admin create EMAIL`)",
            "email",
        )
    with database.atomic():
        taken = Membership.select().where(
            (Membership.team == team.id) & (Membership.user == user.id)
        )
        if taken.exists():
            raise ActionError("conflict", f"{user.email} is in {team.slug} already", "email")
        row = Membership.create(user=user, team=team, role=chosen.value)
        _emit("v1.member.added", row, team, actor, redis_conn)
    return row


def change_role(
    *,
    actor: User | None,
    team: Team,
    user_id: int,
    role: str,
    redis_conn: redis.Redis | None = None,
) -> Membership:
    """Give a member another role; the last owner cannot step down."""
    authorize(actor, team, Role.OWNER)
    chosen = _role(role)
    with database.atomic():
        row = _membership(team, user_id)
        if row.role == chosen.value:
            return row
        if row.role == Role.OWNER.value and not _other_owners(team, user_id):
            raise ActionError(
                "conflict", f"{team.slug} needs an owner: make someone else owner first", "role"
            )
        row.role = chosen.value
        row.save(only=[Membership.role])
        _emit("v1.member.role_changed", row, team, actor, redis_conn)
    return row


def remove_member(
    *, actor: User | None, team: Team, user_id: int, redis_conn: redis.Redis | None = None
) -> None:
    """Remove a member from ``team``; the last owner cannot be removed.

    Someone left without any team is signed out everywhere: their sessions are revoked.
    """
    authorize(actor, team, Role.OWNER)
    with database.atomic():
        row = _membership(team, user_id)
        if row.role == Role.OWNER.value and not _other_owners(team, user_id):
            raise ActionError(
                "conflict", f"{team.slug} needs an owner: make someone else owner first"
            )
        row.delete_instance()
        _emit("v1.member.removed", row, team, actor, redis_conn)
        if not Membership.select().where(Membership.user == user_id).exists():
            revoke_all_sessions(
                user_id, reason="no_team_left", actor=actor_name(actor), redis_conn=redis_conn
            )
