"""What every action shares: the one error type, the one permission check, the actor's name."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from panel.models import Membership, Role, Team, User

__all__ = [
    "ActionError",
    "FieldError",
    "actor_name",
    "as_local_operator",
    "authorize",
    "authorize_operator",
]

# The OS account of the operator running a `helios` command on the server (None elsewhere):
# actions done with ``actor=None`` within `as_local_operator` are recorded under that name.
_local_operator: ContextVar[str | None] = ContextVar("helios_local_operator", default=None)


@dataclass(frozen=True)
class FieldError:
    """One field at fault in a request, and how to fix it."""

    field: str
    message: str


class ActionError(ValueError):
    """A request that cannot be carried out.

    ``code`` is stable (``invalid``, ``not_found``, ``forbidden``, ``conflict`` …) and maps to an
    HTTP status at the API's edge; the message says why and how to fix it. ``field`` names the
    input at fault; ``errors`` lists every field at fault when a request has several (a form
    shows each next to its field, the API returns them all at once).
    """

    def __init__(
        self,
        code: str,
        message: str,
        field: str | None = None,
        *,
        errors: tuple[FieldError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field if field is not None else (errors[0].field if errors else None)
        if not errors and field:
            errors = (FieldError(field, message),)
        self.errors = tuple(errors)

    @classmethod
    def invalid(cls, errors: list[FieldError] | tuple[FieldError, ...]) -> ActionError:
        """An ``invalid`` error for one or more fields; the first one's message leads."""
        return cls("invalid", errors[0].message, errors=tuple(errors))


def actor_name(actor: User | None) -> str:
    """How events name who acted: an email, or the operator at the server's shell
    (``operator NAME (local shell)`` under `as_local_operator`, else ``operator``)."""
    if actor is not None:
        return actor.email
    local = _local_operator.get()
    return f"operator {local} (local shell)" if local else "operator"


@contextmanager
def as_local_operator(name: str) -> Iterator[str]:
    """Record what ``actor=None`` actions do within as done by the OS account ``name`` (the
    `helios` operator commands); yields how events name that operator."""
    token = _local_operator.set(name)
    try:
        yield actor_name(None)
    finally:
        _local_operator.reset(token)


def authorize(actor: User | None, team: Team | int, needed: Role) -> None:
    """Raise ActionError unless ``actor`` holds at least ``needed`` in ``team``.

    ``actor=None`` is an operator at the server's shell (the `helios` operator commands).
    Someone outside the team is told nothing exists, as for any page they may not see.
    """
    if actor is None:
        return
    team_id = team if isinstance(team, int) else team.id
    membership = Membership.get_or_none(
        (Membership.user == actor.id) & (Membership.team == team_id)
    )
    if membership is None:
        raise ActionError("not_found", "no such app or team")
    if Role(membership.role).rank < needed.rank:
        slug = team.slug if isinstance(team, Team) else Team.get_by_id(team_id).slug
        raise ActionError("forbidden", f"this needs the {needed.value} role in {slug}")


def authorize_operator(actor: User | None) -> None:
    """Raise ActionError unless ``actor`` is an operator (or the server's shell)."""
    if actor is not None and not actor.is_operator:
        raise ActionError("not_found", "no such page")
